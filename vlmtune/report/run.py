"""Two evaluation directories -> a report directory: load -> compare -> plots -> render -> write.

    summary = compare_runs("runs/quickstart/zero_shot", "runs/quickstart/finetuned", "runs/quickstart")
    print(format_summary(summary))

Writes into out_dir: report.md, report.html (self-contained: inline CSS, plots and thumbnails as
base64 data URIs), plots/*.png and comparison.json (every number in the report). An unfair comparison
(see `vlmtune.report.compare`) is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from vlmtune.data.example import atomic_write_bytes, atomic_write_json, atomic_write_text
from vlmtune.errors import ConfigError
from vlmtune.report.compare import Comparison, compare
from vlmtune.report.fmt import ci_str, format_p, num
from vlmtune.report.load import FINGERPRINT, METRICS, PREDICTIONS, load_eval_dir, load_history
from vlmtune.report.plots import draw_plots
from vlmtune.report.render import render_html, render_markdown, sections, task_section
from vlmtune.tasks.base import ReportSection


def compare_runs(baseline_dir: str | os.PathLike, candidate_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 *, history: Sequence[dict[str, Any]] | str | os.PathLike | None = None,
                 title: str = "vlmtune report", allow_mismatch: bool = False,
                 n_boot: int = 2000, seed: int = 0, extra: Sequence[ReportSection] = ()) -> dict[str, Any]:
    """Compare a baseline and a candidate evaluation of the same examples; write the report into out_dir.

    Returns `Comparison.summary`: {"baseline": {"label", "accuracy": {"value", "ci"}}, "candidate": {...},
    "mcnemar", "accuracy_difference": {"diff", "ci", "p_value"}, "flips": {"fixed": int, "broken": int}, "n",
    "report_md", "report_html", "comparison_json": paths, "fingerprint_differences": [{key, baseline, candidate}]}.
    extra: sections of the data check (a run adds the near-duplicate pairs), before the flipped examples.
    """
    check_not_same(Path(baseline_dir), Path(candidate_dir))
    comparison = compare(load_eval_dir(baseline_dir, "baseline"), load_eval_dir(candidate_dir, "candidate"),
                         title=title, allow_mismatch=allow_mismatch, history=load_history(history),
                         n_boot=n_boot, seed=seed)
    comparison = write_report(comparison, out_dir, extra=extra)
    return comparison.summary(out_dir)


def check_not_same(a: Path, b: Path) -> None:
    """Comparing an evaluation with itself (or with a copy of it: the same files) reports a difference of exactly
    zero: refuse."""
    files = (FINGERPRINT, PREDICTIONS, METRICS)
    same = a.resolve() == b.resolve() or (all((a / f).is_file() and (b / f).is_file() for f in files)
                                          and all((a / f).read_bytes() == (b / f).read_bytes() for f in files))
    if same:
        raise ConfigError(f"{a} and {b} are the same evaluation; compare two different ones "
                          "(e.g. runs/NAME/zero_shot runs/NAME/finetuned)")


def write_report(comparison: Comparison, out_dir: str | os.PathLike,
                 extra: Sequence[ReportSection] = ()) -> Comparison:
    """Draw the plots and write every file; the comparison with its plot files listed. `extra` sections (no
    plots) go before the flipped examples, and into comparison.json as "data_sections"."""
    out = Path(out_dir)
    pngs = draw_plots(comparison)
    comparison = dataclasses.replace(comparison, plots=[f"plots/{name}" for name in pngs])
    # Plots first, so the documents never point at a plot that is not there yet.
    for name, png in pngs.items():
        atomic_write_bytes(out / "plots" / name, png)
    doc = sections(comparison, pngs)
    at = next((i for i, sec in enumerate(doc) if sec.title == "Flipped examples"), len(doc))
    doc[at:at] = [task_section(s, {}) for s in extra]
    as_json = comparison.to_json()
    if extra:
        as_json["data_sections"] = [{"title": s.title, "text": s.text, "table": s.table} for s in extra]
    atomic_write_json(out / "comparison.json", as_json)
    atomic_write_text(out / "report.md", render_markdown(comparison.title, doc))
    atomic_write_text(out / "report.html", render_html(comparison.title, doc))
    return comparison


def format_summary(summary: dict[str, Any]) -> str:
    """A few console lines: both accuracies with CIs, the difference, the McNemar p-value, the report path."""
    a, b = summary["baseline"], summary["candidate"]
    width = max(len(a["label"]), len(b["label"]))
    lines = [f"{s['label']:<{width}}  accuracy {num(s['accuracy']['value'])} {ci_str(s['accuracy']['ci'])}"
             for s in (a, b)]
    if (d := summary.get("accuracy_difference")) is not None:
        lines.append(f"difference {d['diff']:+.3f} {ci_str(d['ci'])} (paired bootstrap, 95% CI)")
    flips = summary.get("flips", {})
    flip_txt = f" ({flips['fixed']} fixed, {flips['broken']} broken)" if flips else ""
    lines.append(f"McNemar exact p = {format_p(summary['mcnemar']['p_value'])}{flip_txt}")
    if summary.get("fingerprint_differences"):
        keys = ", ".join(d["key"] for d in summary["fingerprint_differences"])
        lines.append(f"WARNING: the runs also differ in {keys} (--allow-mismatch); see the report")
    lines.append(f"report: {summary['report_html']}")
    return "\n".join(lines)
