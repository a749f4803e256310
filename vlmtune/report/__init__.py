"""The comparison report: evaluations of the same examples -> report.md, report.html, plots, comparison.json,
predictions.html.

    from vlmtune.report import compare_many, compare_runs, format_summary
    summary = compare_runs("runs/quickstart/zero_shot", "runs/quickstart/finetuned", "runs/quickstart")
    print(format_summary(summary))
    summary = compare_many([dir_a, dir_b, dir_c], "runs/abc")   # pairwise tests, Holm-adjusted

One stage per module: `load` (evaluation directories) -> `compare` (pairing, fairness checks, numbers:
one `Comparison`; `many`: a `MultiComparison` of several runs) with `paired` (the paired tests, Holm, the
minimum detectable difference) -> `plots` (PNG bytes) -> `render` (one list of sections, written as Markdown
and HTML through the Jinja2 templates in templates/) -> `run` (the files, atomically).
"""

from __future__ import annotations

from vlmtune.report.compare import PREDICTIONS_PAGE, Comparison, compare
from vlmtune.report.many import MultiComparison, compare_several
from vlmtune.report.plots import THUMB_PX
from vlmtune.report.render import FLIP_CAP
from vlmtune.report.run import compare_many, compare_runs, format_summary, write_report

__all__ = [
    "FLIP_CAP",
    "PREDICTIONS_PAGE",
    "THUMB_PX",
    "Comparison",
    "MultiComparison",
    "compare",
    "compare_many",
    "compare_runs",
    "compare_several",
    "format_summary",
    "write_report",
]
