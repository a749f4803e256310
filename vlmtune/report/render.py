"""A `Comparison` -> report.md and report.html, both from one list of `Section`s through Jinja2 templates.

    doc = sections(comparison, pngs)                     # what the report says, once
    markdown = render_markdown(comparison.title, doc)    # templates/report.md.j2
    html = render_html(comparison.title, doc)            # templates/report.html.j2: self-contained (inline CSS,
                                                         # plots and thumbnails as base64 data URIs)

Python decides what each section holds; the templates decide only how a heading, a list, a table or a
plot is written in their format. Text and list items may use three Markdown inline forms, **bold**, `code`
and [a link](target), which the HTML template turns into <strong>, <code> and <a> (after escaping).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmtune.report.compare import PREDICTIONS_PAGE, Comparison, flatten
from vlmtune.report.fmt import MISSING, ci_str, each, entry_cell, format_p, method_of, n_text, short, show
from vlmtune.report.paired import mde_sentence
from vlmtune.report.plots import thumbnail_png
from vlmtune.tasks.base import ReportSection

if TYPE_CHECKING:
    import jinja2

FLIP_CAP = 24  # rows per flipped-examples table; the total is always stated
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Table:
    """Rows of cells (already text) under a header."""

    header: list[str]
    rows: list[list[str]]
    code: frozenset[int] = frozenset()  # columns of identifiers and settings (monospace)
    text: frozenset[int] = frozenset()  # columns of free text (wrapped as written in HTML)
    images: list[list[str]] | None = None  # per row, image files: a thumbnail column in HTML (after the first)


@dataclass
class Plot:
    name: str  # what it shows (alt text)
    path: str  # the PNG, relative to the report directory (Markdown links it)
    png: bytes  # its bytes (HTML embeds them)


@dataclass
class Section:
    """One part of the report. Every field is optional; the templates write those that are set, in this order."""

    title: str | None = None
    level: int = 2
    style: str = ""  # "warning": set apart above everything; "headline": the summary list
    fold: str | None = None  # HTML: the body folds away under this summary line
    items: list[str] = field(default_factory=list)  # a bulleted list
    notes: list[str] = field(default_factory=list)  # caveats, each shown as a note
    text: list[str] = field(default_factory=list)  # paragraphs
    table: Table | None = None
    plots: list[Plot] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# What the report says


def sections(c: Comparison, pngs: dict[str, bytes]) -> list[Section]:
    """The whole report as sections, in reading order."""
    out: list[Section] = []
    if c.fingerprint_differences:
        out.append(
            Section(
                style="warning",
                text=[
                    "**⚠ These runs differ in more than the model weights (compared with --allow-mismatch).** "
                    "The differences below can change scores by themselves:"
                ],
                table=Table(
                    ["setting", "baseline", "candidate"],
                    [[d["key"], show(d["baseline"]), show(d["candidate"])] for d in c.fingerprint_differences],
                    code=frozenset({0, 1, 2}),
                ),
            )
        )
    out.append(Section(style="headline", items=headline(c), notes=c.notes))
    out.append(runs_section(c.runs.values()))
    out.append(metrics_section(c.metrics_by_run(), c.labels, c.sources))
    out.append(significance_section(c))
    generic = [
        Plot(Path(name).stem, f"plots/{name}", png)
        for name, png in pngs.items()
        if Path(name).stem not in {s.plot_name for s in c.sections}
    ]
    if generic:
        out.append(Section("Plots", plots=generic))
    out += [task_section(s, pngs) for s in c.sections]
    out.append(Section("Flipped examples", text=[predictions_link(c.labels)]))
    out += [flip_section(c, kind) for kind in ("fixed", "broken", "still_wrong")]
    fa, fb = flatten(c.fingerprints["baseline"]), flatten(c.fingerprints["candidate"])
    out.append(
        Section(
            "Fingerprints",
            fold="everything the scores depend on",
            table=Table(
                ["key", "baseline", "candidate"],
                [[k, show(fa.get(k, MISSING)), show(fb.get(k, MISSING))] for k in sorted(set(fa) | set(fb))],
                code=frozenset({0}),
                text=frozenset({1, 2}),
            ),
        )
    )
    return out


def headline(c: Comparison) -> list[str]:
    """The sentences a reader needs first: accuracies, the difference, the test the conclusion rests on (and
    exact McNemar beside it when examples share groups), Holm, the detectable difference, the scoring mode."""
    a, b, bs, acc = c.accuracy["baseline"], c.accuracy["candidate"], c.bootstrap, c.tests["accuracy"]
    la, lb = c.labels
    head = c.tests["headline"]
    lines = [
        f"Accuracy: {la} {entry_cell(a)} → {lb} {entry_cell(b)} (n = {n_text(acc['n'], acc['clusters'])}; 95% "
        f"intervals: {each([method_of(a), method_of(b)], c.labels)}).",
        f"Difference {lb} − {la}: {bs['diff']:+.3f}, 95% CI {ci_str(bs['ci'])} ({bs['method']}).",
        mcnemar_sentence(
            acc["mcnemar"], len(c.flips["fixed"]), len(c.flips["broken"]), headline=head["key"] == "mcnemar"
        ),
    ]
    if acc["mcnemar_clustered"] is not None:
        cm = acc["mcnemar_clustered"]
        lines.append(
            f"**Headline test: {cm['method']}**, p = **{format_p(cm['p_value'])}**; the conclusion rests "
            f"on it because {head['why']}."
        )
    if len(c.family) > 1:
        top = c.family[0]
        lines.append(
            f"Holm-adjusted over the {len(c.family)} tests in this report: accuracy p = "
            f"{format_p(top['p_holm'])} (raw {format_p(top['p_value'])}); see Significance."
        )
    lines.append(mde_sentence(acc, significant=_significant(c.family[0])))
    scorings = [c.runs[k]["scoring"] for k in ("baseline", "candidate")]
    if any(scorings):
        lines.append(
            f"Scoring: **{each([str(x) for x in scorings], ('baseline', 'candidate'))}**"
            + (" (both runs)." if len(set(scorings)) == 1 else ".")
        )
    return lines


def _significant(test: dict[str, Any]) -> bool:
    """Significant at 5%, after Holm when the report tests more than one thing."""
    p = test["p_holm"] if test.get("p_holm") is not None else test["p_value"]
    return p is not None and p <= 0.05


def mcnemar_sentence(mc: dict[str, Any], fixed: int, broken: int, *, headline: bool) -> str:
    """Exact McNemar in words; marked as the headline test, or as shown for reference."""
    role = (
        " (the headline test: every example is its own group)"
        if headline
        else " (treats every example as independent; for reference)"
    )
    return f"Exact McNemar test: {fixed} fixed, {broken} broken, p = {format_p(mc['p_value'])}{role}."


def runs_section(runs: Iterable[dict[str, Any]], roles: Sequence[str] = ("baseline", "candidate")) -> Section:
    return Section(
        "Runs",
        table=Table(
            ["", "label", "model", "adapter", "n", "scoring", "directory"],
            [
                [role, r["label"], r["model"], r["adapter"] or "—", r["n"], r["scoring"] or "n/a", r["dir"]]
                for role, r in zip(roles, runs)
            ],
            code=frozenset({6}),
        ),
    )


def metrics_section(
    metrics: list[dict[str, Any]], labels: Sequence[str], sources: dict[str, dict[str, str]]
) -> Section:
    """One row per metric: each run's value [95% CI] (the parse-failure rate with its count), the difference when
    there are two runs, n (groups) and the interval's method, each run's when they differ."""
    two = len(labels) == 2
    header = ["metric", *labels] + ([f"Δ ({labels[1]} − {labels[0]})"] if two else []) + ["n", "interval"]
    rows = []
    for m in metrics:
        es = m["entries"]
        cells = [entry_cell(e) + (f" ({e['count']}/{e['n']})" if "count" in e else "") for e in es]
        diff = [f"{es[1]['value'] - es[0]['value']:+.3f}"] if two else []
        rows.append(
            [
                m["name"],
                *cells,
                *diff,
                each([n_text(e.get("n"), e.get("clusters")) for e in es], labels),
                each([method_of(e) for e in es], labels),
            ]
        )
    return Section(
        "Metrics",
        table=Table(header, rows, text=frozenset({len(header) - 1})),
        text=source_lines(sources)
        + [
            "Intervals are 95%. n counts the examples behind each number and, when examples share a group, the "
            "groups: the interval then treats a group as one unit. The parse-failure rate comes from the prediction "
            "rows (answers that could not be read are scored wrong, never guessed)."
        ],
    )


def source_lines(sources: dict[str, dict[str, str]]) -> list[str]:
    """Where each number comes from (metrics.json's metric_modes), one line per source; per run when they differ."""
    if not sources:
        return []
    distinct = {json.dumps(v, sort_keys=True) for v in sources.values()}
    out = []
    for label, modes in sources.items() if len(distinct) > 1 else [(None, next(iter(sources.values())))]:
        by_source: dict[str, list[str]] = {}
        for metric, src in modes.items():
            by_source.setdefault(src, []).append(f"`{metric}`")
        where = "; ".join(f"{', '.join(ms)} from {src}" for src, ms in by_source.items())
        out.append(f"Where the numbers come from{f' ({label})' if label else ''}: {where}.")
    return out


def significance_section(c: Comparison) -> Section:
    """Every paired test as a table: McNemar (exact, and clustered when groups repeat), the paired (cluster)
    bootstraps, raw p-values and, when the report tests more than one thing, Holm-adjusted ones."""
    acc, head = c.tests["accuracy"], c.tests["headline"]
    holm_by = {(t["metric"], t["key"]): t["p_holm"] for t in c.family}
    k = len(c.family)
    n_all = n_text(acc["n"], acc["clusters"])

    def mark(key: str, test: str) -> str:
        return f"{test}: the headline test" if key == head["key"] else test

    mc, bs = acc["mcnemar"], acc["accuracy_difference"]
    rows: list[list[Any]] = [
        [
            "accuracy",
            mark("mcnemar", mc["method"]),
            f"b = {mc['b']} (right → wrong), c = {mc['c']} (wrong → right)",
            n_all,
            format_p(mc["p_value"]),
            holm_by.get(("accuracy", "mcnemar")),
        ]
    ]
    if (cm := acc["mcnemar_clustered"]) is not None:
        rows.append(
            [
                "accuracy",
                mark("mcnemar_clustered", cm["method"]),
                f"S = Σ(b_g − c_g) = {cm['statistic']:+d}, z = {cm['z']:.2f}, {cm['discordant_groups']} "
                "discordant groups",
                n_all,
                format_p(cm["p_value"]),
                holm_by.get(("accuracy", "mcnemar_clustered")),
            ]
        )
    rows.append(
        [
            "accuracy difference",
            bs["method"],
            f"{bs['diff']:+.3f} {ci_str(bs['ci'])}",
            n_all,
            format_p(bs["p_value"]),
            "— (the interval of the McNemar comparison)",
        ]
    )
    for p in c.paired:
        rows.append(
            [
                f"mean {p['name']}: {p['baseline']:.3f} → {p['candidate']:.3f}",
                p["method"],
                f"{p['diff']:+.3f} {ci_str(p['ci'])}",
                n_text(p["n"], p["clusters"]),
                format_p(p["p_value"]),
                holm_by.get((p["name"], "paired_bootstrap")),
            ]
        )
    header = ["compared", "test", "estimate (candidate − baseline) [95% CI]", "n", "p"]
    if k > 1:
        header.append(f"p, Holm-adjusted ({k} tests)")
        rows = [r[:5] + [r[5] if isinstance(r[5], str) else format_p(r[5]) if r[5] is not None else "—"] for r in rows]
    else:
        rows = [r[:5] for r in rows]
    text = [
        "Paired tests on the same examples. Per-example values are compared over the examples where both "
        "runs have one (a parse failure has none)."
    ]
    if k > 1:
        text.append(
            f"This report tests {k} things (the headline McNemar on accuracy and the paired bootstrap of each "
            "per-example value), so the chance of at least one false positive is larger than 5%; Holm's "
            "adjusted p-values keep it at 5%. Read those when asking whether any one of them is significant."
        )
    return Section(
        "Significance (paired, same examples)",
        text=text,
        table=Table(header, [[str(x) for x in r] for r in rows], text=frozenset({1})),
    )


def predictions_link(labels: Sequence[str]) -> str:
    whose = f"{labels[0]}'s and {labels[1]}'s answers" if len(labels) == 2 else "every run's answer"
    return f"Every example with {whose}: [{PREDICTIONS_PAGE}]({PREDICTIONS_PAGE}) (next to this report)."


def task_section(s: ReportSection, pngs: dict[str, bytes]) -> Section:
    """A task's ReportSection as a report section (its plot already drawn, under its plot_name)."""
    name = f"{s.plot_name}.png"
    table = Table(list(s.table[0]), [list(r) for r in s.table[1:]]) if s.table else None
    return Section(
        s.title,
        text=list(s.text),
        table=table,
        plots=[Plot(s.plot_name or s.title, f"plots/{name}", pngs[name])] if s.plot else [],
    )


FLIP_TITLES = {
    "fixed": "Fixed (wrong → right)",
    "broken": "Broken (right → wrong)",
    "still_wrong": "Still wrong in both",
}


def flip_section(c: Comparison, kind: str) -> Section:
    flips = c.flips[kind]
    shown = f", showing the first {FLIP_CAP}" if len(flips) > FLIP_CAP else ""
    title = f"{FLIP_TITLES[kind]}: {len(flips)} example(s){shown}"
    if not flips:
        return Section(title, level=3, text=["(none)"])
    la, lb = c.labels
    rows = flips[:FLIP_CAP]
    return Section(
        title,
        level=3,
        table=Table(
            ["id", "target", la, lb],
            [[f["id"], f["target"], f["baseline"]["prediction"], f["candidate"]["prediction"]] for f in rows],
            text=frozenset({1, 2, 3}),
            images=[f["images"] for f in rows],
        ),
    )


def predictions_sections(labels: Sequence[str], runs_rows: Sequence[Sequence[dict[str, Any]]]) -> list[Section]:
    """The predictions page: every example (paired rows, the first run's order) with each run's answer and
    whether it was right."""
    header = ["id", "group", "images", "prompt", "target"]
    for label in labels:
        header += [label, f"{label} right"]
    rows = []
    for paired in zip(*runs_rows):
        first = paired[0]
        cells = [
            first["id"],
            first.get("group", ""),
            ", ".join(map(str, first.get("images") or [])),
            first.get("prompt", ""),
            first.get("target"),
        ]
        for r in paired:
            parsed = "" if r.get("parse_ok", True) else " (parse failure)"
            cells += [f"{r.get('prediction')}{parsed}", "✓" if r["correct"] else "✗"]
        rows.append(cells)
    right = ", ".join(f"{label} {sum(bool(r['correct']) for r in rs)}" for label, rs in zip(labels, runs_rows))
    return [
        Section(
            text=[
                f"{len(rows)} examples; right: {right}. Texts longer than 400 characters are cut. "
                "[Back to the report](report.html)."
            ],
            table=Table(header, rows, code=frozenset({0, 1, 2}), text=frozenset({3, 4, *range(5, len(header), 2)})),
        )
    ]


# ----------------------------------------------------------------------------------------------
# Writing it down


def render_markdown(title: str, doc: list[Section]) -> str:
    text = _env("md").get_template("report.md.j2").render(title=title, sections=doc)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_html(title: str, doc: list[Section]) -> str:
    return _env("html").get_template("report.html.j2").render(title=title, sections=doc, thumbs=_Thumbnails())


@lru_cache(maxsize=2)
def _env(kind: str) -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=kind == "html",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    if kind == "md":
        env.filters["cell"] = _md_cell
        env.filters["quote"] = _md_quote
    else:
        env.filters["inline"] = _html_inline
        env.filters["cell"] = lambda v: short(v)
        env.filters["data_uri"] = _data_uri
    return env


def _md_cell(value: Any, code: bool = False) -> str:
    s = short(value).replace("|", "\\|").replace("\n", "⏎ ")
    return f"`{s}`" if code else s


def _md_quote(block: str) -> str:
    block = re.sub(r"\n{3,}", "\n\n", block.strip())
    return "\n".join(f"> {line}".rstrip() for line in block.splitlines())


def _html_inline(text: str) -> Any:
    """Escaped text with **bold**, `code` and [links](target) as HTML."""
    from markupsafe import Markup

    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s\"<>]+)\)", r'<a href="\2">\1</a>', s)
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", s))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class _Thumbnails:
    """Image files -> embedded thumbnails, each file read once per document."""

    def __init__(self) -> None:
        self._cache: dict[str, bytes | None] = {}

    def __call__(self, path: str) -> str | None:
        """The thumbnail's data URI; None when the file cannot be read."""
        if path not in self._cache:
            self._cache[path] = thumbnail_png(path)
        png = self._cache[path]
        return _data_uri(png) if png else None
