"""Read what `compare` needs from disk: evaluation directories and a training history.

    base = load_eval_dir("runs/quickstart/zero_shot", "baseline")
    base.rows, base.metrics, base.fingerprint, base.task, base.task_options

An evaluation directory holds predictions.jsonl, metrics.json and fingerprint.json (`vlmtune.eval.run`
writes them; `vlmtune score` too). A missing or malformed file is a DataError naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtune.errors import DataError
from vlmtune.jsonlines import read_json_lines

PREDICTIONS, METRICS, FINGERPRINT = "predictions.jsonl", "metrics.json", "fingerprint.json"

Row = dict[str, Any]


@dataclass
class EvalRun:
    """One evaluation directory, loaded."""

    path: Path
    rows: list[Row]  # predictions.jsonl, in file order
    metrics_file: dict[str, Any]  # the whole metrics.json
    fingerprint: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.metrics_file.get("label") or self.path.name)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.metrics_file.get("metrics") or {}

    @property
    def mode(self) -> str | None:
        """Scoring mode ("generate" / "loglik" ...), if the evaluation recorded one."""
        mode = self.metrics_file.get("mode", self.metrics.get("mode"))
        return mode if isinstance(mode, str) else None

    @property
    def scoring(self) -> str | None:
        """The scoring mode with where the answers or scores came from when they were made elsewhere
        ("external-scores (VisDial ranks in sub.json)"), as metrics.json's decoding.scored_from says."""
        decoding = self.metrics_file.get("decoding")
        source = decoding.get("scored_from") if isinstance(decoding, dict) else None
        return f"{self.mode} ({source})" if self.mode and isinstance(source, str) and source else self.mode

    @property
    def task(self) -> str | None:
        """The task that scored the run (metrics.json, else the fingerprint); None if neither says."""
        task = self.metrics_file.get("task") or self.fingerprint.get("task")
        return task if isinstance(task, str) and task else None

    @property
    def task_options(self) -> dict[str, Any]:
        """The task's options as the evaluation recorded them ({}: the task's defaults)."""
        opts = self.metrics_file.get("task_options", self.fingerprint.get("task_options"))
        return opts if isinstance(opts, dict) else {}


def load_eval_dir(path: str | os.PathLike, role: str = "run") -> EvalRun:
    """Load predictions.jsonl, metrics.json and fingerprint.json; a missing or bad file raises DataError."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(
            f"{role} evaluation directory not found",
            file=str(path),
            fix=f"pass a directory holding {PREDICTIONS}, {METRICS} and {FINGERPRINT} (e.g. runs/<name>/zero_shot)",
        )
    for name in (PREDICTIONS, METRICS, FINGERPRINT):
        if not (path / name).is_file():
            raise DataError(
                f"the {role} evaluation directory has no {name}",
                file=str(path / name),
                fix="re-run the evaluation into this directory; it writes all three files",
            )
    metrics_file = read_json_object(path / METRICS)
    if not isinstance(metrics_file.get("metrics", {}), dict):
        raise DataError("must be an object of name -> {value, ci, n}", file=str(path / METRICS), field="metrics")
    return EvalRun(
        path=path,
        rows=read_prediction_rows(path / PREDICTIONS),
        metrics_file=metrics_file,
        fingerprint=read_json_object(path / FINGERPRINT),
    )


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON ({e.msg} at line {e.lineno})",
            file=str(path),
            fix="the file may be truncated; re-run the evaluation",
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=str(path))
    return obj


def read_prediction_rows(path: Path) -> list[Row]:
    """predictions.jsonl -> rows, each with a string 'id' (unique) and 'correct'."""
    rows: list[Row] = []
    seen: set[str] = set()
    for line in read_json_lines(
        path,
        what="an evaluation's predictions.jsonl",
        fix="each line must be one prediction row; re-run the evaluation",
    ):
        lineno, row = line.number, line.value
        for key in ("id", "correct"):
            if not isinstance(row, dict) or key not in row:
                raise DataError(
                    "missing",
                    file=str(path),
                    line=lineno,
                    field=key,
                    fix="prediction rows need 'id' and 'correct' (see vlmtune/tasks/base.py)",
                )
        row["id"] = str(row["id"])  # ids may be ints in hand-made files; pairing compares strings
        if row["id"] in seen:
            raise DataError(f"duplicate id '{row['id']}'", file=str(path), line=lineno, field="id")
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise DataError("no predictions", file=str(path), fix="the evaluation wrote an empty file; re-run it")
    return rows


def load_history(history: Sequence[dict[str, Any]] | str | os.PathLike | None) -> list[dict[str, Any]] | None:
    """Accept Trainer's log_history itself, or a trainer_state.json path holding it."""
    if history is None or isinstance(history, list):
        return history
    if not isinstance(history, (str, os.PathLike)):
        return list(history)
    path = Path(history)
    if not path.is_file():
        raise DataError(
            "training history not found",
            file=str(path),
            fix="pass trainer_state.json (from the checkpoint dir) or the log_history list",
        )
    obj = read_json_object(path) if path.suffix == ".json" else None
    if not isinstance(obj, dict) or not isinstance(obj.get("log_history"), list):
        raise DataError(
            "no 'log_history' list",
            file=str(path),
            field="log_history",
            fix="pass the trainer_state.json that transformers.Trainer writes into each checkpoint",
        )
    return obj["log_history"]
