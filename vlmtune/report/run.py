"""Evaluation directories -> a report directory: load -> compare -> plots -> render -> write.

    summary = compare_runs("runs/quickstart/zero_shot", "runs/quickstart/finetuned", "runs/quickstart")
    summary = compare_many(["runs/teach-a/finetuned", "runs/teach-b/finetuned", "runs/teach-c/finetuned"],
                           "runs/teach-abc", labels=["(a) gold", "(b) reminder + gold", "(c) teacher"])
    print(format_summary(summary))

Writes into out_dir: report.md, report.html (self-contained: inline CSS, plots and thumbnails as
base64 data URIs), plots/*.png, comparison.json (every number in the report) and predictions.html (every
example with every run's answer; the reports link it). An unfair comparison (see `vlmtune.report.compare`)
is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmtune.data.example import atomic_write_bytes, atomic_write_json, atomic_write_text
from vlmtune.errors import ConfigError
from vlmtune.report.compare import PREDICTIONS_PAGE, Comparison, compare
from vlmtune.report.fmt import ci_str, entry_cell, format_p, mde_text, method_of, n_text
from vlmtune.report.load import FINGERPRINT, METRICS, PREDICTIONS, Row, load_eval_dir, load_history
from vlmtune.report.many import compare_several, format_many_summary, many_sections
from vlmtune.report.plots import draw_generic, draw_plots
from vlmtune.report.render import Section, predictions_sections, render_html, render_markdown, sections, task_section
from vlmtune.tasks.base import ReportSection


def compare_runs(
    baseline_dir: str | os.PathLike,
    candidate_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    history: Sequence[dict[str, Any]] | str | os.PathLike | None = None,
    title: str = "vlmtune report",
    allow_mismatch: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    extra: Sequence[ReportSection] = (),
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare a baseline and a candidate evaluation of the same examples; write the report into out_dir.

    Returns `Comparison.summary`: {"baseline": {"label", "accuracy": {"value", "ci"}}, "candidate": {...},
    "mcnemar", "accuracy_difference": {"diff", "ci", "p_value"}, "flips": {"fixed": int, "broken": int}, "n",
    "report_md", "report_html", "comparison_json": paths, "fingerprint_differences": [{key, baseline, candidate}]}.
    extra: sections of the data check (a run adds the near-duplicate pairs), before the flipped examples.
    labels: the two runs' names in the report (default: metrics.json's labels, made distinct by their directories).
    """
    check_not_same(Path(baseline_dir), Path(candidate_dir))
    comparison = compare(
        load_eval_dir(baseline_dir, "baseline"),
        load_eval_dir(candidate_dir, "candidate"),
        title=title,
        allow_mismatch=allow_mismatch,
        history=load_history(history),
        n_boot=n_boot,
        seed=seed,
        labels=labels,
    )
    comparison = write_report(comparison, out_dir, extra=extra)
    return comparison.summary(Path(out_dir))


def compare_many(
    eval_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    reference: int | None = None,
    title: str = "vlmtune report",
    allow_mismatch: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare several evaluations of the same examples pairwise (every pair, or each against eval_dirs[reference]),
    with Holm-adjusted p-values over all tests; write report.md, report.html, comparison.json, predictions.html and
    plots/ into out_dir.

    labels: one distinct name per run (default: metrics.json's labels, made distinct by their directories).
    Returns `MultiComparison.summary` (what `format_summary` prints): {"runs": [{"label", "accuracy"}], "n",
    "clusters", "tests": [{"pair", "metric", "test", "diff", "ci", "p_value", "p_holm", ...}], "pairs", paths}.
    """
    paths = [Path(d) for d in eval_dirs]
    for a, b in itertools.combinations(paths, 2):
        check_not_same(a, b)
    mc = compare_several(
        [load_eval_dir(p, f"run {i + 1}") for i, p in enumerate(paths)],
        labels=labels,
        reference=reference,
        title=title,
        allow_mismatch=allow_mismatch,
        n_boot=n_boot,
        seed=seed,
    )
    out = Path(out_dir)
    pngs = draw_generic(mc.metrics, mc.labels, mc.confusions)
    mc = dataclasses.replace(mc, plots=[f"plots/{name}" for name in pngs])
    for name, png in pngs.items():
        atomic_write_bytes(out / "plots" / name, png)
    write_predictions_page(out, mc.title, mc.labels, mc.rows)
    write_documents(out, mc.title, many_sections(mc, pngs), mc.to_json())
    return mc.summary(out)


def check_not_same(a: Path, b: Path) -> None:
    """Comparing an evaluation with itself (or with a copy of it: the same files) reports a difference of exactly
    zero: refuse."""
    files = (FINGERPRINT, PREDICTIONS, METRICS)
    same = a.resolve() == b.resolve() or (
        all((a / f).is_file() and (b / f).is_file() for f in files)
        and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    )
    if same:
        raise ConfigError(
            f"{a} and {b} are the same evaluation; compare two different ones "
            "(e.g. runs/NAME/zero_shot runs/NAME/finetuned)"
        )


def write_report(comparison: Comparison, out_dir: str | os.PathLike, extra: Sequence[ReportSection] = ()) -> Comparison:
    """Draw the plots and write every file; the comparison with its plot files listed. `extra` sections (no
    plots) go before the flipped examples, and into comparison.json as "data_sections"."""
    out = Path(out_dir)
    pngs = draw_plots(comparison)
    comparison = dataclasses.replace(comparison, plots=[f"plots/{name}" for name in pngs])
    # Plots and the predictions page first, so the documents never point at a file that is not there yet.
    for name, png in pngs.items():
        atomic_write_bytes(out / "plots" / name, png)
    write_predictions_page(out, comparison.title, comparison.labels, comparison.rows)
    doc = sections(comparison, pngs)
    at = next((i for i, sec in enumerate(doc) if sec.title == "Flipped examples"), len(doc))
    doc[at:at] = [task_section(s, {}) for s in extra]
    as_json = comparison.to_json()
    if extra:
        as_json["data_sections"] = [{"title": s.title, "text": s.text, "table": s.table} for s in extra]
    write_documents(out, comparison.title, doc, as_json)
    return comparison


def write_predictions_page(out: Path, title: str, labels: Sequence[str], rows: Sequence[Sequence[Row]]) -> None:
    """predictions.html: every example with every run's answer (the reports link it)."""
    atomic_write_text(
        out / PREDICTIONS_PAGE, render_html(f"{title}: all predictions", predictions_sections(labels, rows))
    )


def write_documents(out: Path, title: str, doc: list[Section], as_json: dict[str, Any]) -> None:
    atomic_write_json(out / "comparison.json", as_json)
    atomic_write_text(out / "report.md", render_markdown(title, doc))
    atomic_write_text(out / "report.html", render_html(title, doc))


def format_summary(summary: dict[str, Any]) -> str:
    """A few console lines: each accuracy with its interval, n, groups and method; the difference; the McNemar
    test(s), marking the one the conclusion rests on; Holm when several things were tested; the minimum
    detectable difference; where the report is. A summary of several runs (`compare_many`) gets its own lines."""
    if "pairs" in summary:
        return format_many_summary(summary)
    a, b = summary["baseline"], summary["candidate"]
    width = max(len(a["label"]), len(b["label"]))
    lines = [
        f"{s['label']:<{width}}  accuracy {entry_cell(s['accuracy'])}  (n = "
        f"{n_text(s['accuracy'].get('n'), s['accuracy'].get('clusters'))}; {method_of(s['accuracy'])})"
        for s in (a, b)
    ]
    if (d := summary.get("accuracy_difference")) is not None:
        lines.append(f"difference {d['diff']:+.3f} {ci_str(d['ci'])} (95% CI, {d.get('method', 'paired bootstrap')})")
    flips = summary.get("flips", {})
    flip_txt = f" ({flips['fixed']} fixed, {flips['broken']} broken)" if flips else ""
    head = (summary.get("headline_test") or {}).get("key", "mcnemar")
    lines.append(
        f"McNemar exact p = {format_p(summary['mcnemar']['p_value'])}{flip_txt}"
        + ("  <- headline test" if head == "mcnemar" else "  (ignores groups; for reference)")
    )
    if (cm := summary.get("mcnemar_clustered")) is not None:
        lines.append(f"clustered McNemar p = {format_p(cm['p_value'])} ({cm['clusters']} groups)  <- headline test")
    tests = summary.get("tests") or []
    if len(tests) > 1:
        lines.append(
            f"Holm-adjusted over {len(tests)} tests: "
            + ", ".join(f"{t['metric']} p = {format_p(t['p_holm'])}" for t in tests)
        )
    if (mde := summary.get("mde")) is not None:
        lines.append(
            f"minimum detectable accuracy difference {mde_text(mde)} (80% power, 5% level): smaller true "
            "differences usually test as not significant"
        )
    if summary.get("fingerprint_differences"):
        keys = ", ".join(d["key"] for d in summary["fingerprint_differences"])
        lines.append(f"WARNING: the runs also differ in {keys} (--allow-mismatch); see the report")
    lines.append(f"report: {summary['report_html']}")
    return "\n".join(lines)
