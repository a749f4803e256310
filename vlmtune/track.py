"""Experiment trackers get the results, not just the loss: after a run's comparison, the test metrics with their
confidence intervals, the McNemar test, the accuracy difference and a table of every prediction go to the
trackers named in `train.report_to` (TensorBoard in runs/<name>/logs; MLflow into the run that training opened).

    log_results(run_dir, cfg)        # the pipeline calls it after the report

Names: `test/<evaluation>/<metric>` with `_ci_low` / `_ci_high` beside each value (the 95% interval metrics.json
gives, by the method it names), `test/mcnemar/{p_value,fixed,broken}` (exact), `test/mcnemar_clustered/p_value`
(when examples share groups), `test/accuracy_difference{,_ci_low,_ci_high}`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vlmtune.config import RunConfig
from vlmtune.report.compare import pair_rows
from vlmtune.report.load import load_eval_dir

log = logging.getLogger(__name__)
EVALS = ("zero_shot", "finetuned")
SUPPORTED = ("tensorboard", "mlflow")


def result_scalars(run_dir: Path) -> dict[str, float]:
    """Every number to log: each evaluation's metrics (value, CI bounds), McNemar and the accuracy difference."""
    out: dict[str, float] = {}
    for name in EVALS:
        path = run_dir / name / "metrics.json"
        if not path.exists():
            continue
        for metric, entry in json.loads(path.read_text())["metrics"].items():
            if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)):
                out[f"test/{name}/{metric}"] = float(entry["value"])
                if entry.get("ci"):
                    out[f"test/{name}/{metric}_ci_low"], out[f"test/{name}/{metric}_ci_high"] = map(float, entry["ci"])
    comparison = run_dir / "comparison.json"
    if comparison.exists():
        c = json.loads(comparison.read_text())
        mc = c.get("mcnemar") or {}
        if mc:
            out.update(
                {
                    "test/mcnemar/p_value": float(mc["p_value"]),
                    "test/mcnemar/fixed": float(mc["c"]),
                    "test/mcnemar/broken": float(mc["b"]),
                }
            )
        if (cm := c.get("mcnemar_clustered")) is not None:
            out["test/mcnemar_clustered/p_value"] = float(cm["p_value"])
        diff = c.get("accuracy_difference") or {}
        if diff:
            out["test/accuracy_difference"] = float(diff["diff"])
            out["test/accuracy_difference_ci_low"], out["test/accuracy_difference_ci_high"] = map(float, diff["ci"])
    return out


def predictions_table(run_dir: Path) -> tuple[list[str], list[list[Any]]]:
    """Every test example: id, image, gold answer, and each evaluation's answer and whether it was right."""
    if not all((run_dir / n / "predictions.jsonl").exists() for n in EVALS):
        return [], []
    base, cand = load_eval_dir(run_dir / EVALS[0], "baseline"), load_eval_dir(run_dir / EVALS[1], "candidate")
    columns = ["id", "image", "gold", "zero_shot", "zero_shot_correct", "finetuned", "finetuned_correct"]
    rows = [
        [
            a["id"],
            (a.get("images") or [""])[0],
            str(a.get("target")),
            str(a.get("prediction")),
            bool(a["correct"]),
            str(b.get("prediction")),
            bool(b["correct"]),
        ]
        for a, b in pair_rows(base, cand)
    ]
    return columns, rows


def _markdown(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows])


def to_tensorboard(
    run_dir: Path, scalars: dict[str, float], table: tuple[list[str], list[list[Any]]], step: int
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir / "logs")) as w:
        for k, v in scalars.items():
            w.add_scalar(k, v, global_step=step)
        metric_rows = [[k, f"{v:.4g}"] for k, v in scalars.items()]
        w.add_text(
            "test/results",
            "Intervals: 95%, by the method metrics.json names for each; McNemar: exact "
            "(the clustered test and Holm-adjusted p-values are in report.md and comparison.json).\n\n"
            + _markdown(["name", "value"], metric_rows),
            global_step=step,
        )
        if table[0]:
            w.add_text("test/predictions", _markdown(*table), global_step=step)


def to_mlflow(run_name: str, scalars: dict[str, float], table: tuple[list[str], list[list[Any]]], step: int) -> str:
    """Log into the latest MLflow run of this name (the one training opened), or a new one; returns its id."""
    import mlflow

    found = mlflow.search_runs(
        filter_string=f"attributes.run_name = '{run_name}'",
        order_by=["start_time DESC"],
        max_results=1,
        search_all_experiments=True,
        output_format="list",
    )
    with mlflow.start_run(run_id=found[0].info.run_id if found else None, run_name=None if found else run_name) as run:
        # MLflow metric names allow letters, digits, _ - . / and spaces
        mlflow.log_metrics(scalars, step=step)
        if table[0]:
            columns, rows = table
            mlflow.log_table(
                {c: [r[i] for r in rows] for i, c in enumerate(columns)}, artifact_file="test_predictions.json"
            )
        return run.info.run_id


def log_results(run_dir: str | Path, cfg: RunConfig, *, step: int = 0) -> None:
    """Send the run's test results to each tracker of `cfg.train.report_to` that takes them."""
    run_dir = Path(run_dir)
    wanted = [r for r in cfg.train.report_to if r in SUPPORTED]
    others = [r for r in cfg.train.report_to if r not in SUPPORTED]
    if others:
        log.info(
            f"[track] {', '.join(others)}: training curves only; test results go to "
            f"{' and '.join(SUPPORTED)} (and are in {run_dir})"
        )
    if not wanted:
        return
    scalars, table = result_scalars(run_dir), predictions_table(run_dir)
    if "tensorboard" in wanted:
        to_tensorboard(run_dir, scalars, table, step)
    if "mlflow" in wanted:
        run_id = to_mlflow(run_dir.name, scalars, table, step)
        log.info(f"[track] mlflow run {run_id}: test metrics and predictions")
    log.info(f"[track] {len(scalars)} test numbers and {len(table[1])} predictions sent to {', '.join(wanted)}")
