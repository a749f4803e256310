"""A `Comparison` -> report.md and report.html, both from one list of `Section`s through Jinja2 templates.

    doc = sections(comparison, pngs)                     # what the report says, once
    markdown = render_markdown(comparison.title, doc)    # templates/report.md.j2
    html = render_html(comparison.title, doc)            # templates/report.html.j2: self-contained (inline CSS,
                                                         # plots and thumbnails as base64 data URIs)

Python decides what each section holds; the templates decide only how a heading, a list, a table or a
plot is written in their format. Text and list items may use two Markdown inline forms, **bold** and
`code`, which the HTML template turns into <strong> and <code> (after escaping).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmtune.report.compare import Comparison, flatten
from vlmtune.report.fmt import MISSING, ci_str, format_p, num, short, show
from vlmtune.report.plots import thumbnail_png
from vlmtune.tasks.base import ReportSection

if TYPE_CHECKING:
    import jinja2

FLIP_CAP = 24          # rows per flipped-examples table; the total is always stated
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Table:
    """Rows of cells (already text) under a header."""

    header: list[str]
    rows: list[list[str]]
    code: frozenset[int] = frozenset()    # columns of identifiers and settings (monospace)
    text: frozenset[int] = frozenset()    # columns of free text (wrapped as written in HTML)
    images: list[list[str]] | None = None  # per row, image files: a thumbnail column in HTML (after the first)


@dataclass
class Plot:
    name: str    # what it shows (alt text)
    path: str    # the PNG, relative to the report directory (Markdown links it)
    png: bytes   # its bytes (HTML embeds them)


@dataclass
class Section:
    """One part of the report. Every field is optional; the templates write those that are set, in this order."""

    title: str | None = None
    level: int = 2
    style: str = ""              # "warning": set apart above everything; "headline": the summary list
    fold: str | None = None      # HTML: the body folds away under this summary line
    items: list[str] = field(default_factory=list)   # a bulleted list
    notes: list[str] = field(default_factory=list)   # caveats, each shown as a note
    text: list[str] = field(default_factory=list)    # paragraphs
    table: Table | None = None
    plots: list[Plot] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# What the report says


def sections(c: Comparison, pngs: dict[str, bytes]) -> list[Section]:
    """The whole report as sections, in reading order."""
    la, lb = c.labels
    out: list[Section] = []
    if c.fingerprint_differences:
        out.append(Section(
            style="warning",
            text=["**⚠ These runs differ in more than the model weights (compared with --allow-mismatch).** "
                  "The differences below can change scores by themselves:"],
            table=Table(["setting", "baseline", "candidate"],
                        [[d["key"], show(d["baseline"]), show(d["candidate"])] for d in c.fingerprint_differences],
                        code=frozenset({0, 1, 2}))))
    out.append(Section(style="headline", items=headline(c), notes=c.notes))
    out.append(Section("Runs", table=Table(
        ["", "label", "model", "adapter", "n", "mode", "directory"],
        [[role, r["label"], r["model"], r["adapter"] or "—", r["n"], r["mode"] or "n/a", r["dir"]]
         for role, r in c.runs.items()], code=frozenset({6}))))
    out.append(Section("Metrics", table=Table(["metric", la, lb, f"Δ ({lb} − {la})"], metric_rows(c))))
    out.append(Section("Significance (paired, same examples)", items=significance(c)))
    generic = [Plot(Path(name).stem, f"plots/{name}", png) for name, png in pngs.items()
               if Path(name).stem not in {s.plot_name for s in c.sections}]
    if generic:
        out.append(Section("Plots", plots=generic))
    out += [task_section(s, pngs) for s in c.sections]
    out.append(Section("Flipped examples"))
    out += [flip_section(c, kind) for kind in ("fixed", "broken")]
    fa, fb = flatten(c.fingerprints["baseline"]), flatten(c.fingerprints["candidate"])
    out.append(Section("Fingerprints", fold="everything the scores depend on", table=Table(
        ["key", "baseline", "candidate"],
        [[k, show(fa.get(k, MISSING)), show(fb.get(k, MISSING))] for k in sorted(set(fa) | set(fb))],
        code=frozenset({0}), text=frozenset({1, 2}))))
    return out


def headline(c: Comparison) -> list[str]:
    """The sentences a reader needs first: accuracies, the difference, McNemar, the scoring mode."""
    a, b, mc, bs = c.accuracy["baseline"], c.accuracy["candidate"], c.mcnemar, c.bootstrap
    la, lb = c.labels
    lines = [
        f"Accuracy: {la} {num(a['value'])} {ci_str(a['ci'])} → {lb} {num(b['value'])} {ci_str(b['ci'])} "
        f"(n = {c.runs['baseline']['n']}, 95% CIs).",
        f"Difference {lb} − {la}: {bs['diff']:+.3f}, paired bootstrap 95% CI {ci_str(bs['ci'])}.",
        f"Exact McNemar test: {len(c.flips['fixed'])} fixed, {len(c.flips['broken'])} broken, "
        f"p = {format_p(mc['p_value'])}.",
    ]
    modes = {c.runs[k]["mode"] for k in ("baseline", "candidate")} - {None}
    if len(modes) == 1:
        lines.append(f"Scoring mode: **{modes.pop()}** (both runs).")
    elif modes:
        lines.append(f"Scoring modes: {c.runs['baseline']['mode']} (baseline), "
                     f"{c.runs['candidate']['mode']} (candidate).")
    return lines


def metric_rows(c: Comparison) -> list[list[str]]:
    rows = [[m["name"], f"{num(m['baseline']['value'])} {ci_str(m['baseline']['ci'])}",
             f"{num(m['candidate']['value'])} {ci_str(m['candidate']['ci'])}", f"{m['diff']:+.3f}"]
            for m in c.metrics]
    pa, pb = c.runs["baseline"]["parse_failures"], c.runs["candidate"]["parse_failures"]
    rows.append(["parse failure rate", f"{num(pa['rate'])} ({pa['count']}/{pa['n']})",
                 f"{num(pb['rate'])} ({pb['count']}/{pb['n']})", f"{pb['rate'] - pa['rate']:+.3f}"])
    return rows


def significance(c: Comparison) -> list[str]:
    mc, bs = c.mcnemar, c.bootstrap
    return [f"Exact McNemar test on per-example correctness: b = {mc['b']} (right → wrong), c = {mc['c']} "
            f"(wrong → right), {mc['n_discordant']} discordant, **p = {format_p(mc['p_value'])}**.",
            f"Paired bootstrap of the accuracy difference: {bs['diff']:+.3f}, 95% CI {ci_str(bs['ci'])}, "
            f"p = {format_p(bs.get('p_value'))}."] + [
        f"Paired bootstrap of mean {p['name']} (n = {p['n']} examples defined in both): "
        f"{p['baseline']:.3f} → {p['candidate']:.3f}, difference {p['diff']:+.3f}, 95% CI {ci_str(p['ci'])}, "
        f"p = {format_p(p.get('p_value'))}." for p in c.paired]


def task_section(s: ReportSection, pngs: dict[str, bytes]) -> Section:
    """A task's ReportSection as a report section (its plot already drawn, under its plot_name)."""
    name = f"{s.plot_name}.png"
    table = Table(list(s.table[0]), [list(r) for r in s.table[1:]]) if s.table else None
    return Section(s.title, text=list(s.text), table=table,
                   plots=[Plot(s.plot_name or s.title, f"plots/{name}", pngs[name])] if s.plot else [])


def flip_section(c: Comparison, kind: str) -> Section:
    flips = c.flips[kind]
    what = "wrong → right" if kind == "fixed" else "right → wrong"
    shown = f", showing the first {FLIP_CAP}" if len(flips) > FLIP_CAP else ""
    title = f"{kind.capitalize()} ({what}): {len(flips)} example(s){shown}"
    if not flips:
        return Section(title, level=3, text=["(none)"])
    la, lb = c.labels
    rows = flips[:FLIP_CAP]
    return Section(title, level=3, table=Table(
        ["id", "target", la, lb],
        [[f["id"], f["target"], f["baseline"]["prediction"], f["candidate"]["prediction"]] for f in rows],
        text=frozenset({1, 2, 3}), images=[f["images"] for f in rows]))


# ----------------------------------------------------------------------------------------------
# Writing it down


def render_markdown(title: str, doc: list[Section]) -> str:
    text = _env("md").get_template("report.md.j2").render(title=title, sections=doc)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_html(title: str, doc: list[Section]) -> str:
    return _env("html").get_template("report.html.j2").render(title=title, sections=doc, thumbs=_Thumbnails())


@lru_cache(maxsize=2)
def _env(kind: str) -> "jinja2.Environment":
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=kind == "html",
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
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
    """Escaped text with **bold** and `code` as HTML."""
    from markupsafe import Markup

    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
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
