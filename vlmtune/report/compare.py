"""Two loaded evaluations -> one `Comparison`: pairing, fairness checks and every number the report shows.

    comparison = compare(load_eval_dir(a, "baseline"), load_eval_dir(b, "candidate"), history=None)
    comparison.to_json()            # comparison.json
    comparison.summary(out_dir)     # the few numbers the console and `run` show

Two runs are comparable only when their fingerprints agree on everything but the weights
(model, model_hash, adapter, adapter_hash, and a served model's `server` report): a different prompt, template,
image size, decoding setting or backend changes scores by itself. Such differences are refused unless
allow_mismatch=True, and then they are listed at the top of the report.

The numbers: every metric both runs report, each with its interval, n, groups and method as metrics.json
states them (accuracy and the parse-failure rate are recomputed from the prediction rows, with Wilson intervals
over the examples' groups); the paired tests of `vlmtune.report.paired` (exact McNemar, and the clustered one
when examples share groups; paired cluster bootstraps of the accuracy difference and of the task's per-example
values; the minimum detectable difference), Holm-adjusted when more than one thing is tested; the examples
that were fixed, broken, or stayed wrong. The task that scored the runs is rebuilt from metrics.json (`task`,
`task_options`) for its per-example values and its own report sections (`Task.report_sections`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.errors import ConfigError, DataError, VlmtuneError
from vlmtune.report.fmt import MISSING, jsonable, show
from vlmtune.report.load import PREDICTIONS, EvalRun, Row
from vlmtune.report.paired import family, holm_family, pair_tests, shared_groups
from vlmtune.stats import proportion_entry
from vlmtune.tasks.base import ReportSection, Task, build_task

log = logging.getLogger(__name__)

# What names the system under test, not how it was asked: the weights, or (eval.backend=openai) the server's
# report about the model it serves.
WEIGHT_KEYS = frozenset({"model", "model_hash", "adapter", "adapter_hash", "server"})
# Plots the report draws itself (plots/<name>.png); a task's section plot never takes one of these names.
GENERIC_PLOTS = ("metrics", "confusion", "loss")
PARSE_FAILURE_RATE = "parse_failure_rate"
PREDICTIONS_PAGE = "predictions.html"  # every example, every run's answer: the report links it
Pair = tuple[Row, Row]


@dataclass
class Comparison:
    """Everything the report shows; comparison.json is its plain-JSON form."""

    title: str
    runs: dict[str, dict[str, Any]]  # "baseline"/"candidate" -> label, dir, task, model, adapter, n, mode, scoring
    metrics: list[
        dict[str, Any]
    ]  # {name, baseline: entry, candidate: entry, diff}; entry {value, ci, n, clusters, method}
    tests: dict[str, Any]  # vlmtune.report.paired.pair_tests: accuracy, headline, per_example
    family: list[dict[str, Any]]  # the tests counted for multiplicity, each with p_holm when there are several
    flips: dict[str, list[dict[str, Any]]]  # fixed, broken, still_wrong
    fingerprint_differences: list[dict[str, Any]]
    fingerprints: dict[str, dict[str, Any]]
    notes: list[str]
    sources: dict[str, dict[str, str]] = field(default_factory=dict)  # run label -> metric -> where it comes from
    confusions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (run label, metrics "confusion")
    sections: list[ReportSection] = field(default_factory=list)  # the task's own sections (plot_name set if drawn)
    history: list[dict[str, Any]] | None = None  # the training log, for the loss plot
    plots: list[str] = field(default_factory=list)  # plot files drawn, relative to the report dir
    rows: tuple[list[Row], list[Row]] = field(
        default_factory=lambda: ([], [])
    )  # the paired prediction rows (the predictions page)

    @property
    def labels(self) -> tuple[str, str]:
        return str(self.runs["baseline"]["label"]), str(self.runs["candidate"]["label"])

    def metrics_by_run(self) -> list[dict[str, Any]]:
        """The metrics as [{"name", "entries": [baseline, candidate]}] (the shape several runs share)."""
        return [{"name": m["name"], "entries": [m["baseline"], m["candidate"]]} for m in self.metrics]

    @property
    def mcnemar(self) -> dict[str, Any]:
        """Exact McNemar."""
        return self.tests["accuracy"]["mcnemar"]

    @property
    def bootstrap(self) -> dict[str, Any]:
        """The paired (cluster) bootstrap of the accuracy difference, candidate - baseline."""
        return self.tests["accuracy"]["accuracy_difference"]

    @property
    def paired(self) -> list[dict[str, Any]]:
        """Paired (cluster) bootstraps of the task's per-example values."""
        return self.tests["per_example"]

    @property
    def accuracy(self) -> dict[str, dict[str, Any]]:
        acc = next(m for m in self.metrics if m["name"] == "accuracy")
        return {"baseline": acc["baseline"], "candidate": acc["candidate"]}

    def _headline(self) -> dict[str, Any]:
        """The accuracy comparison's tests, as comparison.json and the summary both give them."""
        acc = self.tests["accuracy"]
        return {
            "n": acc["n"],
            "clusters": acc["clusters"],
            "mcnemar": self.mcnemar,
            "mcnemar_clustered": acc["mcnemar_clustered"],
            "headline_test": self.tests["headline"],
            "accuracy_difference": self.bootstrap,
            "mde": acc["mde"],
        }

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {
                "title": self.title,
                "baseline": self.runs["baseline"],
                "candidate": self.runs["candidate"],
                "metrics": self.metrics,
                **self._headline(),
                "paired_continuous": self.paired,
                "tests": self.family,
                "flips": {k: {"count": len(v), "ids": [f["id"] for f in v]} for k, v in self.flips.items()},
                "predictions": PREDICTIONS_PAGE,
                "metric_sources": self.sources,
                "fingerprint_differences": self.fingerprint_differences,
                "notes": self.notes,
                "plots": self.plots,
                "task_sections": [
                    {
                        "title": s.title,
                        "text": s.text,
                        "table": s.table,
                        "plot": f"plots/{s.plot_name}.png" if s.plot else None,
                    }
                    for s in self.sections
                ],
            }
        )

    def summary(self, out_dir: str | Path) -> dict[str, Any]:
        """The headline numbers and the files written (what `format_summary` prints and `run` returns)."""
        out = Path(out_dir)

        def side(role: str) -> dict[str, Any]:
            e = self.accuracy[role]
            return {
                "label": self.runs[role]["label"],
                "accuracy": {k: e.get(k) for k in ("value", "ci", "n", "clusters", "method")},
            }

        return {
            "baseline": side("baseline"),
            "candidate": side("candidate"),
            **self._headline(),
            "tests": self.family,
            "flips": {k: len(v) for k, v in self.flips.items()},
            "report_md": str(out / "report.md"),
            "report_html": str(out / "report.html"),
            "comparison_json": str(out / "comparison.json"),
            "predictions_html": str(out / PREDICTIONS_PAGE),
            "fingerprint_differences": self.fingerprint_differences,
        }


def compare(
    base: EvalRun,
    cand: EvalRun,
    *,
    title: str = "vlmtune report",
    allow_mismatch: bool = False,
    history: list[dict[str, Any]] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> Comparison:
    """Pair the runs, refuse an unfair comparison, compute every number; nothing is written. labels: the two
    runs' names (default: metrics.json's, made distinct by their directories when they are the same)."""
    pairs = pair_rows(base, cand)
    diffs = fingerprint_differences(base, cand)
    check_fair(diffs, allow_mismatch)
    rows_a, rows_b = [a for a, _ in pairs], [b for _, b in pairs]
    notes: list[str] = []
    la, lb = run_labels([base, cand], labels)
    names = (la, lb)
    groups = shared_groups([rows_a, rows_b], names, notes)
    table = metric_table([base, cand], [rows_a, rows_b], groups, notes)
    if history is not None and not history:
        notes.append("a training history was given but holds no entries; no loss plot.")
    task = task_of(cand, notes)
    tests = pair_tests(rows_a, rows_b, groups, task, n_boot=n_boot, seed=seed)
    return Comparison(
        title=title,
        runs={
            "baseline": {**run_info(base, rows_a), "label": la},
            "candidate": {**run_info(cand, rows_b), "label": lb},
        },
        metrics=[
            {
                "name": m["name"],
                "baseline": m["entries"][0],
                "candidate": m["entries"][1],
                "diff": m["entries"][1]["value"] - m["entries"][0]["value"],
            }
            for m in table
        ],
        tests=tests,
        family=holm_family(family(tests)),
        flips=find_flips(pairs),
        fingerprint_differences=jsonable(diffs),
        fingerprints={"baseline": base.fingerprint, "candidate": cand.fingerprint},
        notes=notes,
        sources=metric_sources([base, cand], names),
        confusions=[
            (label, run.metrics["confusion"])
            for run, label in zip((base, cand), names)
            if isinstance(run.metrics.get("confusion"), dict)
        ],
        sections=named_plots(task.report_sections(rows_a, rows_b, labels=names)) if task else [],
        history=history,
        rows=(rows_a, rows_b),
    )


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
        raise DataError(
            "the two runs were evaluated on different examples: " + "; ".join(parts),
            file=str(cand.path / PREDICTIONS),
            fix="evaluate both models on the same test file (runs/<name>/data/test.jsonl)",
        )
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


def run_labels(runs: Sequence[EvalRun], labels: Sequence[str] | None) -> list[str]:
    """The names the report gives the runs: `labels` when given, else metrics.json's labels, made distinct by
    their directories (three runs all labelled 'fine-tuned' become 'teach-a/finetuned', ...)."""
    if labels is not None:
        if len(labels) != len(runs) or len(set(labels)) != len(labels):
            raise ConfigError(f"give one distinct label per run: {len(runs)} runs, labels {list(labels)}")
        return [str(x) for x in labels]
    out = [run.label for run in runs]
    if len(set(out)) < len(out):
        out = [f"{run.path.parent.name}/{run.path.name}" for run in runs]
    if len(set(out)) < len(out):
        out = [f"{i + 1}: {x}" for i, x in enumerate(out)]
    return out


def check_fair(diffs: list[dict[str, Any]], allow_mismatch: bool) -> None:
    """Refuse (VlmtuneError, naming every difference) unless allow_mismatch."""
    if diffs and not allow_mismatch:
        lines = "\n".join(
            f"  {d['key']}: baseline {show(d['baseline'])}, candidate {show(d['candidate'])}" for d in diffs
        )
        raise VlmtuneError(
            "the two runs differ in more than the model weights, so their scores are not comparable:\n"
            f"{lines}\nRe-run the evaluations with the same settings, or pass --allow-mismatch to compare "
            "anyway (the differences are then listed at the top of the report)."
        )


# ----------------------------------------------------------------------------------------------
# Numbers


def _is_metric(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("value"), (int, float))
        and not isinstance(entry.get("value"), bool)
    )


def _ci(entry: dict[str, Any]) -> list[float] | None:
    ci = entry.get("ci")
    return [float(ci[0]), float(ci[1])] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def _entry(e: dict[str, Any]) -> dict[str, Any]:
    """A metrics.json entry as the report shows it: value, interval, n, groups and the interval's method (None
    where an older metrics.json does not say)."""
    return {
        "value": float(e["value"]),
        "ci": _ci(e),
        "n": e.get("n"),
        "clusters": e.get("clusters"),
        "method": e.get("method"),
    }


def _from_rows(hits: list[bool], groups: Sequence[Any]) -> dict[str, Any]:
    """A proportion over the prediction rows, with its Wilson interval over the examples' groups."""
    return {**proportion_entry(hits, groups=groups), "count": sum(hits), "source": PREDICTIONS}


def metric_table(
    runs: Sequence[EvalRun], rows: Sequence[Sequence[Row]], groups: Sequence[Any], notes: list[str]
) -> list[dict[str, Any]]:
    """[{"name", "entries": [one per run]}]: accuracy first, then every other metric all runs report (metrics.json
    order), then the parse-failure rate. Accuracy comes from metrics.json when it has one (checked against the
    rows' `correct`), else from the rows; the parse-failure rate always from the rows (so it carries its count),
    once, whether or not metrics.json has its own `parse_failure_rate`."""
    names = [
        name
        for name in runs[0].metrics
        if name != PARSE_FAILURE_RATE and all(_is_metric(run.metrics.get(name)) for run in runs)
    ]
    correct = [[bool(r["correct"]) for r in rs] for rs in rows]
    failed = [[not r.get("parse_ok", True) for r in rs] for rs in rows]
    table: list[dict[str, Any]] = []
    if "accuracy" in names:
        names.remove("accuracy")
        table.append({"name": "accuracy", "entries": [_entry(run.metrics["accuracy"]) for run in runs]})
        _check_stated(runs, "accuracy", correct, notes, "the paired tests use")
    else:  # accuracy anchors the headline and the paired tests, so it is always shown
        table.append({"name": "accuracy", "entries": [_from_rows(c, groups) for c in correct]})
    table += [{"name": name, "entries": [_entry(run.metrics[name]) for run in runs]} for name in names]
    table.append({"name": PARSE_FAILURE_RATE, "entries": [_from_rows(f, groups) for f in failed]})
    _check_stated(runs, PARSE_FAILURE_RATE, failed, notes, "the report shows")
    return table


def _check_stated(runs: Sequence[EvalRun], name: str, hits: list[list[bool]], notes: list[str], what: str) -> None:
    """A note for each run whose metrics.json value of `name` disagrees with the prediction rows."""
    for run, h in zip(runs, hits):
        entry = run.metrics.get(name)
        stated = entry.get("value") if isinstance(entry, dict) else entry
        if not isinstance(stated, (int, float)) or isinstance(stated, bool):
            continue
        actual = sum(h) / len(h)
        if abs(float(stated) - actual) > 1e-6:
            notes.append(
                f"{run.label}: metrics.json says {name} {float(stated):.4f} but the rows of {PREDICTIONS} "
                f"give {actual:.4f}; {what} {PREDICTIONS}."
            )


def metric_sources(runs: Sequence[EvalRun], labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """Per run (by its label in the report), where each number comes from, as metrics.json's "metric_modes" says
    (answer text, option scores and whose); a run that does not say is left out."""
    out = {}
    for run, label in zip(runs, labels):
        modes = run.metrics.get("metric_modes")
        if isinstance(modes, dict) and modes:
            out[label] = {str(k): str(v) for k, v in modes.items()}
    return out


def find_flips(pairs: list[Pair]) -> dict[str, list[dict[str, Any]]]:
    """Examples whose correctness changed, fixed (wrong -> right) and broken (right -> wrong), and those wrong in
    both runs (still_wrong)."""
    flips: dict[str, list[dict[str, Any]]] = {"fixed": [], "broken": [], "still_wrong": []}
    for a, b in pairs:
        if a["correct"] and b["correct"]:
            continue
        kind = "still_wrong" if not a["correct"] and not b["correct"] else "fixed" if b["correct"] else "broken"
        flips[kind].append(
            {
                "id": a["id"],
                "target": a.get("target"),
                "images": a.get("images") or b.get("images") or [],
                "prompt": a.get("prompt"),
                "baseline": {
                    "prediction": a.get("prediction"),
                    "parsed": a.get("parsed"),
                    "parse_ok": a.get("parse_ok"),
                },
                "candidate": {
                    "prediction": b.get("prediction"),
                    "parsed": b.get("parsed"),
                    "parse_ok": b.get("parse_ok"),
                },
            }
        )
    return flips


def run_info(run: EvalRun, rows: list[Row]) -> dict[str, Any]:
    k = sum(1 for r in rows if not r.get("parse_ok", True))
    return {
        "label": run.label,
        "dir": str(run.path.resolve()),
        "task": run.task,
        "model": run.metrics_file.get("model", run.fingerprint.get("model")),
        "adapter": run.metrics_file.get("adapter", run.fingerprint.get("adapter")),
        "n": len(rows),
        "mode": run.mode,
        "scoring": run.scoring,
        "parse_failures": {"count": k, "n": len(rows), "rate": k / len(rows)},
    }


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
        notes.append(
            f"task '{run.task}' could not be built here ({e}); {left_out}. A task from a plugin must be "
            "importable when comparing too (VLMTUNE_PLUGINS=<module>)."
        )
        log.warning(f"[compare] {notes[-1]}")
        return None


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
