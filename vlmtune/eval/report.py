"""Compare two evaluation runs: metrics with CIs, paired significance tests, flipped examples, plots.

    from vlmtune.eval.report import compare_runs, format_summary
    summary = compare_runs("runs/quickstart/zero_shot", "runs/quickstart/finetuned", "runs/quickstart")
    print(format_summary(summary))

Writes into out_dir: report.md, report.html (self-contained: inline CSS, plots and thumbnails as
base64 data URIs), plots/*.png and comparison.json (every number in the report).

Two runs are comparable only when their fingerprints agree on everything but the weights
(model, model_hash, adapter, adapter_hash): a different prompt, template, image size or decoding
setting changes scores by itself. Such differences are refused unless allow_mismatch=True, and then
they are listed at the top of the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vlmtune.data.example import atomic_write_bytes, atomic_write_json, atomic_write_text
from vlmtune.errors import DataError, VlmtuneError
from vlmtune.stats import mcnemar_exact, paired_bootstrap

PREDICTIONS, METRICS, FINGERPRINT = "predictions.jsonl", "metrics.json", "fingerprint.json"
WEIGHT_KEYS = frozenset({"model", "model_hash", "adapter", "adapter_hash"})
FLIP_CAP = 24          # rows per flipped-examples table; the total is always stated
THUMB_PX = 96          # longest side of an example thumbnail in report.html
TEXT_CAP = 400         # characters of a prediction shown in a table cell
MISSING = "(missing)"  # a fingerprint key present in only one run
BASELINE_COLOR, CANDIDATE_COLOR = "#9e9e9e", "#1f77b4"
# Trainer log keys that are bookkeeping, not quality metrics.
_EVAL_BOOKKEEPING = {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class EvalRun:
    """One evaluation directory, loaded."""

    path: Path
    rows: list[dict[str, Any]]       # predictions.jsonl, in file order
    metrics_file: dict[str, Any]     # the whole metrics.json
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


def load_eval_dir(path: str | os.PathLike, role: str = "run") -> EvalRun:
    """Load predictions.jsonl, metrics.json and fingerprint.json; a missing or bad file raises DataError."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{role} evaluation directory not found", file=str(path),
                        fix=f"pass a directory holding {PREDICTIONS}, {METRICS} and {FINGERPRINT} "
                            "(e.g. runs/<name>/zero_shot)")
    for name in (PREDICTIONS, METRICS, FINGERPRINT):
        if not (path / name).is_file():
            raise DataError(f"the {role} evaluation directory has no {name}", file=str(path / name),
                            fix="re-run the evaluation into this directory; it writes all three files")
    metrics_file = _read_json_object(path / METRICS)
    if not isinstance(metrics_file.get("metrics", {}), dict):
        raise DataError("must be an object of name -> {value, ci, n}", file=str(path / METRICS), field="metrics")
    return EvalRun(path=path, rows=_read_predictions(path / PREDICTIONS), metrics_file=metrics_file,
                   fingerprint=_read_json_object(path / FINGERPRINT))


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at line {e.lineno})", file=str(path),
                        fix="the file may be truncated; re-run the evaluation") from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=str(path))
    return obj


def _read_predictions(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e.msg} at column {e.colno})", file=str(path), line=lineno,
                                fix="each line must be one prediction row; re-run the evaluation") from None
            for key in ("id", "correct"):
                if not isinstance(row, dict) or key not in row:
                    raise DataError("missing", file=str(path), line=lineno, field=key,
                                    fix="prediction rows need 'id' and 'correct' (see vlmtune/tasks/base.py)")
            row["id"] = str(row["id"])  # ids may be ints in hand-made files; pairing compares strings
            if row["id"] in seen:
                raise DataError(f"duplicate id '{row['id']}'", file=str(path), line=lineno, field="id")
            seen.add(row["id"])
            rows.append(row)
    if not rows:
        raise DataError("no predictions", file=str(path), fix="the evaluation wrote an empty file; re-run it")
    return rows


def _load_history(history: Sequence[dict[str, Any]] | str | os.PathLike | None) -> list[dict[str, Any]] | None:
    """Accept Trainer's log_history itself, or a trainer_state.json path holding it."""
    if history is None or isinstance(history, list):
        return history
    path = Path(history)
    if not path.is_file():
        raise DataError("training history not found", file=str(path),
                        fix="pass trainer_state.json (from the checkpoint dir) or the log_history list")
    obj = _read_json_object(path) if path.suffix == ".json" else None
    if not isinstance(obj, dict) or not isinstance(obj.get("log_history"), list):
        raise DataError("no 'log_history' list", file=str(path), field="log_history",
                        fix="pass the trainer_state.json that transformers.Trainer writes into each checkpoint")
    return obj["log_history"]


# ----------------------------------------------------------------------------------------------
# Pairing and fairness checks


def pair_rows(base: EvalRun, cand: EvalRun) -> list[tuple[dict[str, Any], dict[str, Any]]]:
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
    flat_a, flat_b = _flatten(base.fingerprint), _flatten(cand.fingerprint)
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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_fair(diffs: list[dict[str, Any]], allow_mismatch: bool) -> None:
    if diffs and not allow_mismatch:
        lines = "\n".join(f"  {d['key']}: baseline {_show(d['baseline'])}, candidate {_show(d['candidate'])}"
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


def parse_failures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Count rows whose answer could not be parsed (they are scored wrong, never guessed)."""
    k = sum(1 for r in rows if not r.get("parse_ok", True))
    return {"count": k, "n": len(rows), "rate": k / len(rows)}


def find_flips(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
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


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib through its Agg canvas directly: no pyplot global state, no display needed)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaching the Agg canvas is what selects the backend, for this figure only
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_metric_bars(metric_rows: list[dict[str, Any]], labels: tuple[str, str]) -> bytes:
    """One panel per metric (their scales differ), two bars each with 95% CI error bars."""
    ncols = min(4, len(metric_rows))
    nrows = math.ceil(len(metric_rows) / ncols)
    fig = _figure(3.0 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, row in zip(axes, metric_rows):
        vals, errs = [], [[], []]
        for side in ("baseline", "candidate"):
            v, ci = row[side]["value"], row[side]["ci"]
            vals.append(v)
            # A CI that does not contain the value (it happens with some estimators) must not give negative bars.
            errs[0].append(max(0.0, v - ci[0]) if ci else 0.0)
            errs[1].append(max(0.0, ci[1] - v) if ci else 0.0)
        ax.bar([0, 1], vals, yerr=errs, capsize=6, color=[BASELINE_COLOR, CANDIDATE_COLOR])
        for x, v in enumerate(vals):
            ax.annotate(f"{v:.3f}", (x, v), xytext=(8, 3), textcoords="offset points", fontsize=8)
        ax.set_xticks([0, 1], labels)
        ax.set_title(row["name"], fontsize=10)
        top = max([v for v in vals] + [c[1] for c in (row["baseline"]["ci"], row["candidate"]["ci"]) if c])
        if 0 <= min(vals) and top <= 1:
            ax.set_ylim(0, 1.08)
    for ax in axes[len(metric_rows):]:
        ax.set_visible(False)
    return _png(fig)


def _confusion_axes(conf: dict[str, Any]) -> tuple[list[list[float]], list[str], list[str]] | None:
    """(matrix, row labels, column labels); columns may carry an extra 'parse_failure' column."""
    matrix, labels = conf.get("matrix"), [str(x) for x in conf.get("labels") or []]
    if not matrix or not all(isinstance(r, list) for r in matrix):
        return None
    n_rows, n_cols = len(matrix), len(matrix[0])
    if len(labels) == n_cols:
        cols = labels
    elif len(labels) + 1 == n_cols:  # labels name the classes only; the extra column counts parse failures
        cols = labels + ["parse_failure"]
    else:
        cols = [str(i) for i in range(n_cols)]
    true_labels = [c for c in cols if c != "parse_failure"]
    if len(true_labels) == n_rows:
        rows = true_labels
    elif len(cols) == n_rows:
        rows = cols
    else:
        rows = [str(i) for i in range(n_rows)]
    return matrix, rows, cols


def plot_confusions(runs: list[tuple[str, dict[str, Any]]]) -> bytes | None:
    """Confusion matrices side by side (rows: true label, columns: prediction), counts annotated."""
    panels = [(label, parsed) for label, conf in runs if (parsed := _confusion_axes(conf)) is not None]
    if not panels:
        return None
    size = max(len(p[1][2]) for p in panels)
    side = min(10.0, 2.5 + 0.45 * size)
    fig = _figure(side * len(panels), side)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (label, (matrix, rows, cols)) in zip(axes, panels):
        vmax = max(max(r) for r in matrix) or 1
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        if size <= 25:  # beyond that the numbers overlap; the colours still tell the story
            for i, r in enumerate(matrix):
                for j, v in enumerate(r):
                    ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8,
                            color="white" if v > vmax / 2 else "black")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("prediction")
        ax.set_ylabel("true label")
        ax.set_title(label)
    return _png(fig)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def count_errors(rows: list[dict[str, Any]]) -> tuple[list[int], int]:
    """(prediction - target for parsed rows, number of parse failures) for an integer-target task."""
    errors, failures = [], 0
    for r in rows:
        p = r.get("parsed")
        if not r.get("parse_ok", True) or not isinstance(p, (int, float)) or isinstance(p, bool):
            failures += 1
        else:
            errors.append(round(p - r["target"]))
    return errors, failures


def plot_count_errors(runs: list[tuple[str, list[dict[str, Any]]]], clip: int = 10) -> bytes:
    """Grouped histogram of prediction - target per run, plus a separate parse-failure bar."""
    data = [(label, *count_errors(rows)) for label, rows in runs]
    all_err = [e for _, errs, _ in data for e in errs] or [0]
    lo, hi = max(-clip, min(min(all_err), -1)), min(clip, max(max(all_err), 1))
    xs = list(range(lo, hi + 1))
    fail_x = hi + 2  # a gap separates "could not parse" from the error scale
    fig = _figure(max(6.0, 0.45 * (len(xs) + 3)), 3.6)
    ax = fig.subplots()
    width = 0.4
    for k, ((label, errs, fails), color) in enumerate(zip(data, (BASELINE_COLOR, CANDIDATE_COLOR))):
        counts = [sum(1 for e in errs if min(max(e, lo), hi) == x) for x in xs]  # ends collect the clipped tails
        mae = sum(abs(e) for e in errs) / len(errs) if errs else float("nan")
        off = (k - 0.5) * width
        ax.bar([x + off for x in xs], counts, width, color=color,
               label=f"{label} (MAE on parsed {mae:.2f}, {fails} parse failures)")
        ax.bar([fail_x + off], [fails], width, color=color, hatch="//", edgecolor="black")
    ticks = [str(x) for x in xs]
    if lo == -clip:
        ticks[0] = f"≤{lo}"
    if hi == clip:
        ticks[-1] = f"≥{hi}"
    ax.set_xticks(xs + [fail_x], ticks + ["parse\nfailure"], fontsize=8)
    ax.axvline(0, color="black", lw=0.6, ls=":")
    ax.set_xlabel("prediction − target")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_history(history: list[dict[str, Any]]) -> bytes | None:
    """Train and eval loss vs step; eval metrics (eval_* other than loss) in a second panel."""
    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(e.get("step", i), e[key]) for i, e in enumerate(history)
               if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)]
        return [p[0] for p in pts], [p[1] for p in pts]

    metric_keys = sorted({k for e in history for k in e if k.startswith("eval_") and k not in _EVAL_BOOKKEEPING
                          and isinstance(e[k], (int, float)) and not isinstance(e[k], bool)})
    train, evl = series("loss"), series("eval_loss")
    if not train[0] and not evl[0] and not metric_keys:
        return None
    fig = _figure(11.0 if metric_keys else 6.0, 3.6)
    axes = fig.subplots(1, 2 if metric_keys else 1, squeeze=False).ravel()
    if train[0]:
        axes[0].plot(*train, label="train loss", color=CANDIDATE_COLOR, lw=1)
    if evl[0]:
        axes[0].plot(*evl, "o-", label="eval loss", color="#d62728", ms=4)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].set_title("loss")
    axes[0].legend(fontsize=8)
    if metric_keys:
        for key in metric_keys:
            axes[1].plot(*series(key), "o-", label=key.removeprefix("eval_"), ms=4)
        axes[1].set_xlabel("step")
        axes[1].set_title("evaluation during training")
        axes[1].legend(fontsize=8)
    return _png(fig)


def hangul_font_families() -> list[str]:
    """Font families for plot text, with a Hangul-capable fallback so Korean labels render.

    The NanumGothic font ships in the koreanize-matplotlib package; only its file is used (importing that
    package would change matplotlib's global settings). matplotlib falls back per glyph along the list.
    """
    import importlib.util

    from matplotlib import font_manager

    spec = importlib.util.find_spec("koreanize_matplotlib")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return ["DejaVu Sans"]
    ttf = Path(list(spec.submodule_search_locations)[0]) / "fonts" / "NanumGothic.ttf"
    if not ttf.is_file():
        return ["DejaVu Sans"]
    if "NanumGothic" not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(ttf))
    return ["DejaVu Sans", "NanumGothic"]


def render_plots(base: EvalRun, cand: EvalRun, metric_rows: list[dict[str, Any]],
                 pairs: list[tuple[dict[str, Any], dict[str, Any]]],
                 history: list[dict[str, Any]] | None) -> dict[str, bytes]:
    """All plots that apply to these runs: {file name: PNG bytes}."""
    import matplotlib

    with matplotlib.rc_context({"font.family": hangul_font_families()}):
        return _render_plots(base, cand, metric_rows, pairs, history)


def _render_plots(base: EvalRun, cand: EvalRun, metric_rows: list[dict[str, Any]],
                  pairs: list[tuple[dict[str, Any], dict[str, Any]]],
                  history: list[dict[str, Any]] | None) -> dict[str, bytes]:
    labels = (base.label, cand.label)
    plots: dict[str, bytes] = {"metrics.png": plot_metric_bars(metric_rows, labels)}
    confs = [(run.label, run.metrics["confusion"]) for run in (base, cand)
             if isinstance(run.metrics.get("confusion"), dict)]
    if (png := plot_confusions(confs)) is not None:
        plots["confusion.png"] = png
    # Integer targets alone would also match multiple choice (option indices), where
    # "prediction - target" means nothing; counting tasks are named so or report an MAE.
    task = str(base.metrics_file.get("task") or base.fingerprint.get("task") or "")
    if all(_is_int(a.get("target")) for a, _ in pairs) and ("count" in task or "mae" in base.metrics):
        plots["count_errors.png"] = plot_count_errors([(base.label, [a for a, _ in pairs]),
                                                       (cand.label, [b for _, b in pairs])])
    if history and (png := plot_history(history)) is not None:
        plots["loss.png"] = png
    return plots


# ----------------------------------------------------------------------------------------------
# Formatting helpers


def _num(x: Any, digits: int = 3) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x):
        return "n/a"
    return f"{x:.{digits}f}"


def _ci_str(ci: list[float] | None) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "[n/a]"


def format_p(p: Any) -> str:
    """p-values in 3 significant digits (tests and the console use the same format)."""
    return f"{p:.3g}" if isinstance(p, (int, float)) and not math.isnan(p) else "n/a"


def _short(text: Any, cap: int = TEXT_CAP) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    return s if len(s) <= cap else s[:cap] + f"… (+{len(s) - cap} chars)"


def _show(v: Any) -> str:
    """A setting's value as the user wrote it in JSON (null, "text", [224, 224])."""
    return v if v is MISSING else json.dumps(v, ensure_ascii=False, default=str)


def _md_cell(x: Any) -> str:
    return _short(x).replace("|", "\\|").replace("\n", "⏎ ")


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf become null (strict JSON readers choke on NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_png(path: str, px: int = THUMB_PX) -> bytes | None:
    """The image scaled so its longest side is px; small images are enlarged with nearest-neighbour so
    synthetic pixels stay crisp. None if the file cannot be read (the report still renders)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            scale = px / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# The report documents


@dataclass
class Comparison:
    """Everything the documents show; comparison.json is its plain-JSON form."""

    title: str
    runs: dict[str, dict[str, Any]]   # "baseline"/"candidate" -> label, dir, model, adapter, n, mode, parse_failures
    metrics: list[dict[str, Any]]
    accuracy: dict[str, dict[str, Any]]
    mcnemar: dict[str, Any]
    bootstrap: dict[str, Any]         # accuracy difference, candidate - baseline
    flips: dict[str, list[dict[str, Any]]]
    fingerprint_differences: list[dict[str, Any]]
    fingerprints: dict[str, dict[str, Any]]
    notes: list[str]
    plots: list[str]                  # paths relative to out_dir
    paired: list[dict[str, Any]] = field(default_factory=list)  # paired bootstraps of continuous per-example values

    def to_json(self) -> dict[str, Any]:
        return _jsonable({
            "title": self.title, "baseline": self.runs["baseline"], "candidate": self.runs["candidate"],
            "metrics": self.metrics, "mcnemar": self.mcnemar, "accuracy_difference": self.bootstrap,
            "flips": {k: {"count": len(v), "ids": [f["id"] for f in v]} for k, v in self.flips.items()},
            "fingerprint_differences": self.fingerprint_differences, "notes": self.notes, "plots": self.plots,
            "paired_continuous": self.paired,
        })


def _run_info(run: EvalRun, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"label": run.label, "dir": str(run.path.resolve()), "task": run.metrics_file.get("task"),
            "model": run.metrics_file.get("model", run.fingerprint.get("model")),
            "adapter": run.metrics_file.get("adapter", run.fingerprint.get("adapter")),
            "n": len(rows), "mode": run.mode, "parse_failures": parse_failures(rows)}


def _headline(c: Comparison) -> list[str]:
    """The three sentences a reader needs first, shared by the markdown and the HTML."""
    a, b, mc, bs = c.accuracy["baseline"], c.accuracy["candidate"], c.mcnemar, c.bootstrap
    la, lb = c.runs["baseline"]["label"], c.runs["candidate"]["label"]
    return [
        f"Accuracy: {la} {_num(a['value'])} {_ci_str(a['ci'])} → {lb} {_num(b['value'])} {_ci_str(b['ci'])} "
        f"(n = {c.runs['baseline']['n']}, 95% CIs).",
        f"Difference {lb} − {la}: {bs['diff']:+.3f}, paired bootstrap 95% CI {_ci_str(list(bs['ci']))}.",
        f"Exact McNemar test: {len(c.flips['fixed'])} fixed, {len(c.flips['broken'])} broken, "
        f"p = {format_p(mc['p_value'])}.",
    ]


def _mode_line(c: Comparison) -> str | None:
    modes = {c.runs[k]["mode"] for k in ("baseline", "candidate")} - {None}
    if not modes:
        return None
    if len(modes) == 1:
        return f"Scoring mode: **{modes.pop()}** (both runs)."
    return f"Scoring modes: {c.runs['baseline']['mode']} (baseline), {c.runs['candidate']['mode']} (candidate)."


def _metric_table_rows(c: Comparison) -> list[list[str]]:
    rows = [[m["name"], f"{_num(m['baseline']['value'])} {_ci_str(m['baseline']['ci'])}",
             f"{_num(m['candidate']['value'])} {_ci_str(m['candidate']['ci'])}", f"{m['diff']:+.3f}"]
            for m in c.metrics]
    pa, pb = c.runs["baseline"]["parse_failures"], c.runs["candidate"]["parse_failures"]
    rows.append(["parse failure rate", f"{_num(pa['rate'])} ({pa['count']}/{pa['n']})",
                 f"{_num(pb['rate'])} ({pb['count']}/{pb['n']})", f"{pb['rate'] - pa['rate']:+.3f}"])
    return rows


def _flip_title(c: Comparison, kind: str) -> str:
    flips = c.flips[kind]
    what = "wrong → right" if kind == "fixed" else "right → wrong"
    shown = f", showing the first {FLIP_CAP}" if len(flips) > FLIP_CAP else ""
    return f"{kind.capitalize()} ({what}): {len(flips)} example(s){shown}"


def render_markdown(c: Comparison) -> str:
    la, lb = c.runs["baseline"]["label"], c.runs["candidate"]["label"]
    out = [f"# {c.title}", ""]
    if c.fingerprint_differences:
        out += ["> **⚠ These runs differ in more than the model weights (compared with --allow-mismatch).**",
                "> The differences below can change scores by themselves:", ">"]
        out += [f"> - `{d['key']}`: baseline `{_show(d['baseline'])}`, candidate `{_show(d['candidate'])}`"
                for d in c.fingerprint_differences]
        out.append("")
    out += [f"- {line}" for line in _headline(c)]
    if (mode := _mode_line(c)) is not None:
        out.append(f"- {mode}")
    out += [f"- Note: {n}" for n in c.notes]
    out += ["", "## Runs", "", "| | label | model | adapter | n | mode | directory |", "|---|---|---|---|---|---|---|"]
    for role in ("baseline", "candidate"):
        r = c.runs[role]
        out.append(f"| {role} | {_md_cell(r['label'])} | {_md_cell(r['model'])} | {_md_cell(r['adapter'] or '—')} "
                   f"| {r['n']} | {r['mode'] or 'n/a'} | `{r['dir']}` |")
    out += ["", "## Metrics", "", f"| metric | {_md_cell(la)} | {_md_cell(lb)} | Δ ({_md_cell(lb)} − {_md_cell(la)}) |",
            "|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in _metric_table_rows(c)]
    mc, bs = c.mcnemar, c.bootstrap
    out += ["", "## Significance (paired, same examples)", "",
            f"- Exact McNemar test on per-example correctness: b = {mc['b']} (right → wrong), "
            f"c = {mc['c']} (wrong → right), {mc['n_discordant']} discordant, p = {format_p(mc['p_value'])}.",
            f"- Paired bootstrap of the accuracy difference: {bs['diff']:+.3f}, 95% CI {_ci_str(list(bs['ci']))}, "
            f"p = {format_p(bs.get('p_value'))}."] + [f"- {line}" for line in _paired_lines(c)] + [""]
    if c.plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in c.plots] + [""]
    out += ["## Flipped examples", ""]
    for kind in ("fixed", "broken"):
        out += [f"### {_flip_title(c, kind)}", ""]
        if not c.flips[kind]:
            out += ["(none)", ""]
            continue
        out += [f"| id | target | {_md_cell(la)} | {_md_cell(lb)} |", "|---|---|---|---|"]
        out += [f"| {_md_cell(f['id'])} | {_md_cell(f['target'])} | {_md_cell(f['baseline']['prediction'])} "
                f"| {_md_cell(f['candidate']['prediction'])} |" for f in c.flips[kind][:FLIP_CAP]]
        out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;
 padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.3em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:14px} th,td{border:1px solid #ddd;padding:4px 8px;
 text-align:left;vertical-align:top} th{background:#f5f5f5}
td.text{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;max-width:360px}
.warn{background:#fdecea;border:2px solid #d93025;padding:.6em 1em;border-radius:6px}
.note{background:#fff8e1;border:1px solid #f0c36d;padding:.4em 1em;border-radius:6px}
.headline{font-size:16px} .headline li{margin:.2em 0}
img.plot{max-width:100%;border:1px solid #eee;margin:.4em 0}
img.thumb{image-rendering:pixelated;border:1px solid #ccc;margin:1px}
code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""


def _html_table(header: list[str], rows: list[list[str]], text_cols: set[int] = frozenset()) -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="text">{v}</td>' if i in text_cols else f"<td>{v}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _thumbs_html(paths: list[str], cache: dict[str, str]) -> str:
    cells = []
    for p in paths:
        if p not in cache:
            png = thumbnail_png(p)
            cache[p] = (f'<img class="thumb" src="{_data_uri(png)}" title="{html.escape(p)}">' if png
                        else f"<em>unreadable: {html.escape(Path(p).name)}</em>")
        cells.append(cache[p])
    return "".join(cells)


def render_html(c: Comparison, plot_bytes: dict[str, bytes]) -> str:
    e = html.escape
    la, lb = e(c.runs["baseline"]["label"]), e(c.runs["candidate"]["label"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(c.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(c.title)}</h1>"]
    if c.fingerprint_differences:
        rows = [[f"<code>{e(d['key'])}</code>", e(_show(d["baseline"])), e(_show(d["candidate"]))]
                for d in c.fingerprint_differences]
        parts.append("<div class='warn'><strong>⚠ These runs differ in more than the model weights "
                     "(compared with --allow-mismatch).</strong> The differences below can change scores by "
                     "themselves:" + _html_table(["setting", "baseline", "candidate"], rows) + "</div>")
    items = _headline(c) + ([m.replace("**", "") for m in [_mode_line(c)] if m])
    parts.append("<ul class='headline'>" + "".join(f"<li>{e(s)}</li>" for s in items) + "</ul>")
    parts += [f"<p class='note'>Note: {e(n)}</p>" for n in c.notes]

    run_rows = [[role, e(str(r["label"])), e(str(r["model"])), e(str(r["adapter"] or "—")), str(r["n"]),
                 e(r["mode"] or "n/a"), f"<code>{e(r['dir'])}</code>"]
                for role, r in c.runs.items()]
    parts += ["<h2>Runs</h2>", _html_table(["", "label", "model", "adapter", "n", "mode", "directory"], run_rows)]
    parts += ["<h2>Metrics</h2>", _html_table(["metric", la, lb, f"Δ ({lb} − {la})"],
                                              [[e(x) for x in r] for r in _metric_table_rows(c)])]
    mc, bs = c.mcnemar, c.bootstrap
    parts += ["<h2>Significance (paired, same examples)</h2><ul>",
              f"<li>Exact McNemar test on per-example correctness: b = {mc['b']} (right → wrong), "
              f"c = {mc['c']} (wrong → right), {mc['n_discordant']} discordant, "
              f"<strong>p = {format_p(mc['p_value'])}</strong>.</li>",
              f"<li>Paired bootstrap of the accuracy difference: {bs['diff']:+.3f}, 95% CI "
              f"{e(_ci_str(list(bs['ci'])))}, p = {format_p(bs.get('p_value'))}.</li>"]
    parts += [f"<li>{e(line)}</li>" for line in _paired_lines(c)] + ["</ul>"]
    if plot_bytes:
        parts.append("<h2>Plots</h2>")
        parts += [f"<div><img class='plot' alt='{e(name)}' src='{_data_uri(png)}'></div>"
                  for name, png in plot_bytes.items()]
    parts.append("<h2>Flipped examples</h2>")
    cache: dict[str, str] = {}
    for kind in ("fixed", "broken"):
        parts.append(f"<h3>{e(_flip_title(c, kind))}</h3>")
        if not c.flips[kind]:
            parts.append("<p>(none)</p>")
            continue
        rows = [[e(f["id"]), _thumbs_html(f["images"], cache), e(_short(f["target"])),
                 e(_short(f["baseline"]["prediction"])), e(_short(f["candidate"]["prediction"]))]
                for f in c.flips[kind][:FLIP_CAP]]
        parts.append(_html_table(["id", "images", "target", la, lb], rows, text_cols={2, 3, 4}))
    fa, fb = _flatten(c.fingerprints["baseline"]), _flatten(c.fingerprints["candidate"])
    fp_rows = [[f"<code>{e(k)}</code>", e(_show(fa.get(k, MISSING))), e(_show(fb.get(k, MISSING)))]
               for k in sorted(set(fa) | set(fb))]
    parts += ["<h2>Fingerprints</h2><details><summary>everything the scores depend on</summary>",
              _html_table(["key", "baseline", "candidate"], fp_rows, text_cols={1, 2}), "</details>",
              "</body></html>"]
    return "\n".join(parts)


def paired_continuous(task_name: str, task_options: dict[str, Any], pairs: list[tuple[dict[str, Any], dict[str, Any]]],
                      n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Paired bootstrap of each continuous per-example value the task defines (task.per_example)."""
    from vlmtune.tasks import build_task

    try:
        task = build_task(task_name, task_options)
    except VlmtuneError:
        return []
    va, vb = task.per_example([a for a, _ in pairs]), task.per_example([b for _, b in pairs])
    out = []
    for name in sorted(set(va) & set(vb)):
        both = [(x, y) for x, y in zip(va[name], vb[name]) if x is not None and y is not None]
        if len(both) < 2:
            continue
        res = paired_bootstrap([x for x, _ in both], [y for _, y in both], n_boot=n_boot, seed=seed)
        out.append(_jsonable({"name": name, "n": len(both), "baseline": float(np.mean([x for x, _ in both])),
                              "candidate": float(np.mean([y for _, y in both])), **res}))
    return out


def _paired_lines(c: Comparison) -> list[str]:
    return [f"Paired bootstrap of mean {p['name']} (n = {p['n']} examples defined in both): "
            f"{p['baseline']:.3f} → {p['candidate']:.3f}, difference {p['diff']:+.3f}, 95% CI "
            f"{_ci_str(list(p['ci']))}, p = {format_p(p.get('p_value'))}." for p in c.paired]


# ----------------------------------------------------------------------------------------------
# Entry points


def compare_runs(baseline_dir: str | os.PathLike, candidate_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 *, history: Sequence[dict[str, Any]] | str | os.PathLike | None = None,
                 title: str = "vlmtune report", allow_mismatch: bool = False,
                 n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Compare a baseline and a candidate evaluation of the same examples; write the report into out_dir.

    Returns {"baseline": {"label", "accuracy": {"value", "ci"}}, "candidate": {...}, "mcnemar": {...},
    "accuracy_difference": {"diff", "ci", "p_value"}, "flips": {"fixed": int, "broken": int}, "n": int,
    "report_md", "report_html", "comparison_json": paths, "fingerprint_differences": [{key, baseline, candidate}]}.
    """
    # Set up: load, pair, refuse unfair comparisons before computing anything.
    base, cand = load_eval_dir(baseline_dir, "baseline"), load_eval_dir(candidate_dir, "candidate")
    pairs = pair_rows(base, cand)
    diffs = fingerprint_differences(base, cand)
    _check_fair(diffs, allow_mismatch)
    history_rows = _load_history(history)

    # Run: numbers, then plots.
    correct_a = [bool(a["correct"]) for a, _ in pairs]
    correct_b = [bool(b["correct"]) for _, b in pairs]
    notes: list[str] = []
    metric_rows = compare_metrics(base, cand, correct_a, correct_b, notes)
    accuracy = next(m for m in metric_rows if m["name"] == "accuracy")
    # Bootstrap direction: values_b - values_a = candidate - baseline, the sign every table uses.
    bootstrap = dict(paired_bootstrap([float(x) for x in correct_a], [float(x) for x in correct_b],
                                      n_boot=n_boot, seed=seed))
    if history is not None and not history_rows:
        notes.append("a training history was given but holds no entries; no loss plot.")
    plot_bytes = render_plots(base, cand, metric_rows, pairs, history_rows)
    comparison = Comparison(
        title=title,
        runs={"baseline": _run_info(base, [a for a, _ in pairs]), "candidate": _run_info(cand, [b for _, b in pairs])},
        metrics=metric_rows,
        accuracy={"baseline": accuracy["baseline"], "candidate": accuracy["candidate"]},
        mcnemar=_jsonable(dict(mcnemar_exact(correct_a, correct_b))), bootstrap=_jsonable(bootstrap),
        flips=find_flips(pairs), fingerprint_differences=_jsonable(diffs),
        fingerprints={"baseline": base.fingerprint, "candidate": cand.fingerprint}, notes=notes,
        plots=[f"plots/{name}" for name in plot_bytes],
        paired=paired_continuous(str(cand.metrics_file.get("task", "")), cand.metrics_file.get("task_options") or {},
                                 pairs, n_boot, seed))

    # Write: plots first, so the documents never point at a plot that is not there yet.
    out = Path(out_dir)
    for name, png in plot_bytes.items():
        atomic_write_bytes(out / "plots" / name, png)
    atomic_write_json(out / "comparison.json", comparison.to_json())
    atomic_write_text(out / "report.md", render_markdown(comparison))
    atomic_write_text(out / "report.html", render_html(comparison, plot_bytes))

    def side(role: str) -> dict[str, Any]:
        acc = comparison.accuracy[role]
        return {"label": comparison.runs[role]["label"], "accuracy": {"value": acc["value"], "ci": acc["ci"]}}

    return {"baseline": side("baseline"), "candidate": side("candidate"), "mcnemar": comparison.mcnemar,
            "accuracy_difference": comparison.bootstrap,
            "flips": {k: len(v) for k, v in comparison.flips.items()}, "n": len(pairs),
            "report_md": str(out / "report.md"), "report_html": str(out / "report.html"),
            "comparison_json": str(out / "comparison.json"),
            "fingerprint_differences": comparison.fingerprint_differences}


def format_summary(summary: dict[str, Any]) -> str:
    """A few console lines: both accuracies with CIs, the difference, the McNemar p-value, the report path."""
    a, b = summary["baseline"], summary["candidate"]
    width = max(len(a["label"]), len(b["label"]))
    lines = [f"{s['label']:<{width}}  accuracy {_num(s['accuracy']['value'])} {_ci_str(s['accuracy']['ci'])}"
             for s in (a, b)]
    if (d := summary.get("accuracy_difference")) is not None:
        lines.append(f"difference {d['diff']:+.3f} {_ci_str(list(d['ci']))} (paired bootstrap, 95% CI)")
    flips = summary.get("flips", {})
    flip_txt = f" ({flips['fixed']} fixed, {flips['broken']} broken)" if flips else ""
    lines.append(f"McNemar exact p = {format_p(summary['mcnemar']['p_value'])}{flip_txt}")
    if summary.get("fingerprint_differences"):
        keys = ", ".join(d["key"] for d in summary["fingerprint_differences"])
        lines.append(f"WARNING: the runs also differ in {keys} (--allow-mismatch); see the report")
    lines.append(f"report: {summary['report_html']}")
    return "\n".join(lines)
