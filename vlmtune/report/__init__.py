"""The comparison report: two evaluations of the same examples -> report.md, report.html, plots, comparison.json.

    from vlmtune.report import compare_runs, format_summary
    summary = compare_runs("runs/quickstart/zero_shot", "runs/quickstart/finetuned", "runs/quickstart")
    print(format_summary(summary))

One stage per module: `load` (evaluation directories) -> `compare` (pairing, fairness checks, numbers:
one `Comparison`) -> `plots` (PNG bytes) -> `render` (one list of sections, written as Markdown and HTML
through the Jinja2 templates in templates/) -> `run` (the files, atomically).
"""

from __future__ import annotations

from vlmtune.report.compare import Comparison, compare
from vlmtune.report.plots import THUMB_PX
from vlmtune.report.render import FLIP_CAP
from vlmtune.report.run import compare_runs, format_summary, write_report

__all__ = ["FLIP_CAP", "THUMB_PX", "Comparison", "compare", "compare_runs", "format_summary", "write_report"]
