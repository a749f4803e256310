"""Two loaded evaluations -> one `Comparison`: pairing, fairness checks and every number the report shows.

    comparison = compare(load_eval_dir(a, "baseline"), load_eval_dir(b, "candidate"), history=None)
    comparison.to_json()            # comparison.json
    comparison.summary(out_dir)     # the few numbers the console and `run` show

Two runs are comparable only when their fingerprints agree on everything but the weights
(model, model_hash, adapter, adapter_hash, and a served model's `server` report): a different prompt, template,
image size, decoding setting or backend changes scores by itself. Such differences are refused unless
allow_mismatch=True, and then they are listed at the top of the report.

The task that scored the runs is rebuilt from metrics.json (`task`, `task_options`): its per-example
values get paired bootstraps, and its own report sections (`Task.report_sections`) are added.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmtune.errors import DataError, VlmtuneError
from vlmtune.report.fmt import MISSING, jsonable, show
from vlmtune.report.load import PREDICTIONS, EvalRun, Row
from vlmtune.stats import mcnemar_exact, paired_bootstrap
from vlmtune.tasks.base import ReportSection, Task, build_task

log = logging.getLogger(__name__)

# What names the system under test, not how it was asked: the weights, or (eval.backend=openai) the server's
# report about the model it serves.
WEIGHT_KEYS = frozenset({"model", "model_hash", "adapter", "adapter_hash", "server"})
# Plots the report draws itself (plots/<name>.png); a task's section plot never takes one of these names.
GENERIC_PLOTS = ("metrics", "confusion", "loss")
Pair = tuple[Row, Row]


@dataclass
class Comparison:
    """Everything the report shows; comparison.json is its plain-JSON form."""

    title: str
    runs: dict[str, dict[str, Any]]   # "baseline"/"candidate" -> label, dir, task, model, adapter, n, mode, parse_failures
    metrics: list[dict[str, Any]]     # {name, baseline: {value, ci, n}, candidate: {...}, diff}
    accuracy: dict[str, dict[str, Any]]
    mcnemar: dict[str, Any]
    bootstrap: dict[str, Any]         # accuracy difference, candidate - baseline
    flips: dict[str, list[dict[str, Any]]]
    fingerprint_differences: list[dict[str, Any]]
    fingerprints: dict[str, dict[str, Any]]
    notes: list[str]
    paired: list[dict[str, Any]] = field(default_factory=list)  # paired bootstraps of continuous per-example values
    confusions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (run label, metrics "confusion")
    sections: list[ReportSection] = field(default_factory=list)  # the task's own sections (plot_name set if drawn)
    history: list[dict[str, Any]] | None = None                  # the training log, for the loss plot
    plots: list[str] = field(default_factory=list)               # plot files drawn, relative to the report dir

    @property
    def labels(self) -> tuple[str, str]:
        return str(self.runs["baseline"]["label"]), str(self.runs["candidate"]["label"])

    def to_json(self) -> dict[str, Any]:
        return jsonable({
            "title": self.title, "baseline": self.runs["baseline"], "candidate": self.runs["candidate"],
            "metrics": self.metrics, "mcnemar": self.mcnemar, "accuracy_difference": self.bootstrap,
            "flips": {k: {"count": len(v), "ids": [f["id"] for f in v]} for k, v in self.flips.items()},
            "fingerprint_differences": self.fingerprint_differences, "notes": self.notes, "plots": self.plots,
            "paired_continuous": self.paired,
            "task_sections": [{"title": s.title, "text": s.text, "table": s.table,
                               "plot": f"plots/{s.plot_name}.png" if s.plot else None} for s in self.sections],
        })

    def summary(self, out_dir: str | Path) -> dict[str, Any]:
        """The headline numbers and the files written (what `format_summary` prints and `run` returns)."""
        out = Path(out_dir)

        def side(role: str) -> dict[str, Any]:
            acc = self.accuracy[role]
            return {"label": self.runs[role]["label"], "accuracy": {"value": acc["value"], "ci": acc["ci"]}}

        return {"baseline": side("baseline"), "candidate": side("candidate"), "mcnemar": self.mcnemar,
                "accuracy_difference": self.bootstrap, "flips": {k: len(v) for k, v in self.flips.items()},
                "n": self.runs["baseline"]["n"], "report_md": str(out / "report.md"),
                "report_html": str(out / "report.html"), "comparison_json": str(out / "comparison.json"),
                "fingerprint_differences": self.fingerprint_differences}


def compare(base: EvalRun, cand: EvalRun, *, title: str = "vlmtune report", allow_mismatch: bool = False,
            history: list[dict[str, Any]] | None = None, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Pair the runs, refuse an unfair comparison, compute every number; nothing is written."""
    pairs = pair_rows(base, cand)
    diffs = fingerprint_differences(base, cand)
    check_fair(diffs, allow_mismatch)
    rows_a, rows_b = [a for a, _ in pairs], [b for _, b in pairs]
    correct_a, correct_b = [bool(r["correct"]) for r in rows_a], [bool(r["correct"]) for r in rows_b]
    notes: list[str] = []
    metric_rows = compare_metrics(base, cand, correct_a, correct_b, notes)
    accuracy = next(m for m in metric_rows if m["name"] == "accuracy")
    # Bootstrap direction: values_b - values_a = candidate - baseline, the sign every table uses.
    bootstrap = paired_bootstrap([float(x) for x in correct_a], [float(x) for x in correct_b], n_boot=n_boot, seed=seed)
    if history is not None and not history:
        notes.append("a training history was given but holds no entries; no loss plot.")
    task = task_of(cand, notes)
    labels = (base.label, cand.label)
    return Comparison(
        title=title, runs={"baseline": run_info(base, rows_a), "candidate": run_info(cand, rows_b)},
        metrics=metric_rows, accuracy={"baseline": accuracy["baseline"], "candidate": accuracy["candidate"]},
        mcnemar=jsonable(dict(mcnemar_exact(correct_a, correct_b))), bootstrap=jsonable(dict(bootstrap)),
        flips=find_flips(pairs), fingerprint_differences=jsonable(diffs),
        fingerprints={"baseline": base.fingerprint, "candidate": cand.fingerprint}, notes=notes,
        paired=paired_continuous(task, pairs, n_boot, seed) if task else [],
        confusions=[(run.label, run.metrics["confusion"]) for run in (base, cand)
                    if isinstance(run.metrics.get("confusion"), dict)],
        sections=named_plots(task.report_sections(rows_a, rows_b, labels=labels)) if task else [],
        history=history)


# ----------------------------------------------------------------------------------------------
# Pairing and fairness checks


def pair_rows(base: EvalRun, cand: EvalRun) -> list[Pair]:
    """Pair prediction rows by id (baseline order); different id sets raise DataError."""
    ids_a = {r["id"] for r in base.rows}
    ids_b = {r["id"] for r in cand.rows}
    if ids_a != ids_b:
        parts = []
        for name, only in (("baseline", ids_a - ids_b), ("candidate", ids_b - ids_a)):
            if only:
                few = ", ".join(repr(i) for i in sorted(only)[:5]) + (", ..." if len(only) > 5 else "")
                parts.append(f"{len(only)} id(s) only in the {name} ({few})")
        raise DataError("the two runs were evaluated on different examples: " + "; ".join(parts),
                        file=str(cand.path / PREDICTIONS),
                        fix="evaluate both models on the same test file (runs/<name>/data/test.jsonl)")
    by_id = {r["id"]: r for r in cand.rows}
    return [(r, by_id[r["id"]]) for r in base.rows]


def fingerprint_differences(base: EvalRun, cand: EvalRun) -> list[dict[str, Any]]:
    """Every setting, other than the weights, that differs between the runs: [{key, baseline, candidate}].

    Nested dicts (decoding, versions) are compared key by key so the message names e.g.
    'decoding.max_new_tokens' rather than the whole dict. The scoring mode from metrics.json counts too:
    generate-then-parse and log-likelihood scores are not comparable.
    """
    flat_a, flat_b = flatten(base.fingerprint), flatten(cand.fingerprint)
    if base.mode is not None or cand.mode is not None:
        flat_a["mode (metrics.json)"], flat_b["mode (metrics.json)"] = base.mode, cand.mode
    diffs = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if key.split(".")[0] in WEIGHT_KEYS:
            continue
        va, vb = flat_a.get(key, MISSING), flat_b.get(key, MISSING)
        if va != vb:
            diffs.append({"key": key, "baseline": va, "candidate": vb})
    return diffs


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with dotted keys ({"decoding": {"mode": x}} -> {"decoding.mode": x})."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_fair(diffs: list[dict[str, Any]], allow_mismatch: bool) -> None:
    """Refuse (VlmtuneError, naming every difference) unless allow_mismatch."""
    if diffs and not allow_mismatch:
        lines = "\n".join(f"  {d['key']}: baseline {show(d['baseline'])}, candidate {show(d['candidate'])}"
                          for d in diffs)
        raise VlmtuneError(
            "the two runs differ in more than the model weights, so their scores are not comparable:\n"
            f"{lines}\nRe-run the evaluations with the same settings, or pass --allow-mismatch to compare "
            "anyway (the differences are then listed at the top of the report).")


# ----------------------------------------------------------------------------------------------
# Numbers


def _is_metric(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("value"), (int, float))
            and not isinstance(entry.get("value"), bool))


def _ci(entry: dict[str, Any]) -> list[float] | None:
    ci = entry.get("ci")
    return [float(ci[0]), float(ci[1])] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def _accuracy_from_rows(correct: list[bool]) -> dict[str, Any]:
    """Accuracy with a Wilson interval, for runs whose metrics.json has no 'accuracy' entry."""
    from scipy.stats import binomtest

    k, n = sum(correct), len(correct)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"value": k / n, "ci": [float(ci.low), float(ci.high)], "n": n, "source": PREDICTIONS}


def compare_metrics(base: EvalRun, cand: EvalRun, correct_a: list[bool], correct_b: list[bool],
                    notes: list[str]) -> list[dict[str, Any]]:
    """One row per metric present in both runs: {name, baseline, candidate, diff (candidate - baseline)}."""
    entries: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for name, ea in base.metrics.items():
        eb = cand.metrics.get(name)
        if _is_metric(ea) and _is_metric(eb):
            entries.append((name, ea, eb))
    if "accuracy" not in {name for name, _, _ in entries}:
        # Accuracy anchors the headline and the paired tests, so it is always shown.
        entries.insert(0, ("accuracy", _accuracy_from_rows(correct_a), _accuracy_from_rows(correct_b)))
    else:
        for run, correct in ((base, correct_a), (cand, correct_b)):
            stated, actual = float(run.metrics["accuracy"]["value"]), sum(correct) / len(correct)
            if abs(stated - actual) > 1e-6:
                notes.append(f"{run.label}: metrics.json says accuracy {stated:.4f} but the 'correct' column of "
                             f"{PREDICTIONS} gives {actual:.4f}; the paired tests use {PREDICTIONS}.")
    rows = []
    for name, ea, eb in entries:
        va, vb = float(ea["value"]), float(eb["value"])
        rows.append({"name": name,
                     "baseline": {"value": va, "ci": _ci(ea), "n": ea.get("n")},
                     "candidate": {"value": vb, "ci": _ci(eb), "n": eb.get("n")},
                     "diff": vb - va})
    return rows


def parse_failures(rows: list[Row]) -> dict[str, Any]:
    """Count rows whose answer could not be parsed (they are scored wrong, never guessed)."""
    k = sum(1 for r in rows if not r.get("parse_ok", True))
    return {"count": k, "n": len(rows), "rate": k / len(rows)}


def find_flips(pairs: list[Pair]) -> dict[str, list[dict[str, Any]]]:
    """Examples whose correctness changed: fixed (wrong -> right) and broken (right -> wrong)."""
    flips: dict[str, list[dict[str, Any]]] = {"fixed": [], "broken": []}
    for a, b in pairs:
        if bool(a["correct"]) == bool(b["correct"]):
            continue
        flips["fixed" if b["correct"] else "broken"].append({
            "id": a["id"], "target": a.get("target"), "images": a.get("images") or b.get("images") or [],
            "prompt": a.get("prompt"),
            "baseline": {"prediction": a.get("prediction"), "parsed": a.get("parsed"), "parse_ok": a.get("parse_ok")},
            "candidate": {"prediction": b.get("prediction"), "parsed": b.get("parsed"), "parse_ok": b.get("parse_ok")},
        })
    return flips


def run_info(run: EvalRun, rows: list[Row]) -> dict[str, Any]:
    return {"label": run.label, "dir": str(run.path.resolve()), "task": run.task,
            "model": run.metrics_file.get("model", run.fingerprint.get("model")),
            "adapter": run.metrics_file.get("adapter", run.fingerprint.get("adapter")),
            "n": len(rows), "mode": run.mode, "parse_failures": parse_failures(rows)}


# ----------------------------------------------------------------------------------------------
# What the task adds


def task_of(run: EvalRun, notes: list[str]) -> Task | None:
    """The task that scored `run`, rebuilt with its recorded options; None (and a note saying what is left out)
    when the evaluation names no task or the task cannot be built here."""
    left_out = "per-example paired tests and the task's own report sections are left out"
    if run.task is None:
        notes.append(f"the evaluations do not name their task (metrics.json 'task'), so {left_out}.")
        return None
    try:
        return build_task(run.task, run.task_options)
    except VlmtuneError as e:
        notes.append(f"task '{run.task}' could not be built here ({e}); {left_out}. A task from a plugin must be "
                     "importable when comparing too (VLMTUNE_PLUGINS=<module>).")
        log.warning(f"[compare] {notes[-1]}")
        return None


def paired_continuous(task: Task, pairs: list[Pair], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Paired bootstrap of each continuous per-example value the task defines (task.per_example)."""
    va, vb = task.per_example([a for a, _ in pairs]), task.per_example([b for _, b in pairs])
    out = []
    for name in sorted(set(va) & set(vb)):
        both = [(x, y) for x, y in zip(va[name], vb[name]) if x is not None and y is not None]
        if len(both) < 2:
            continue
        res = paired_bootstrap([x for x, _ in both], [y for _, y in both], n_boot=n_boot, seed=seed)
        out.append(jsonable({"name": name, "n": len(both), "baseline": float(np.mean([x for x, _ in both])),
                             "candidate": float(np.mean([y for _, y in both])), **res}))
    return out


def named_plots(sections: list[ReportSection]) -> list[ReportSection]:
    """The sections, each plot given a file name of its own: the task's plot_name made file-safe, kept clear of
    the report's own plots and of the other sections' (a suffix -2, -3 ... when taken)."""
    taken = set(GENERIC_PLOTS)
    out = []
    for i, s in enumerate(sections):
        if s.plot is not None:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", s.plot_name or s.title).strip("._") or f"section{i + 1}"
            name, k = stem, 1
            while name in taken:
                k += 1
                name = f"{stem}-{k}"
            taken.add(name)
            s = dataclasses.replace(s, plot_name=name)
        out.append(s)
    return out
