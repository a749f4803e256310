"""The report's plots, as PNG bytes: metrics with CIs, confusion matrices (on shared axes), training loss, the
task's own.

matplotlib is used through its Agg canvas directly: no pyplot global state, no display needed. Plot text
falls back to a Hangul font, so Korean labels render.

    pngs = draw_plots(comparison)     # {"metrics.png": b"\\x89PNG...", "<a task section's plot_name>.png": ...}
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmtune.report.compare import Comparison
from vlmtune.tasks.base import REPORT_COLORS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THUMB_PX = 96  # longest side of an example thumbnail in report.html
BASELINE_COLOR, CANDIDATE_COLOR = REPORT_COLORS
# Trainer log keys that are bookkeeping, not quality metrics.
_EVAL_BOOKKEEPING = {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def draw_plots(c: Comparison) -> dict[str, bytes]:
    """Every plot that applies to the comparison: {file name: PNG bytes}; the report's own first, then the
    task sections' (each under its section's plot_name)."""
    plots = draw_generic(c.metrics_by_run(), list(c.labels), c.confusions, c.history)
    with _fonts():
        for s in c.sections:
            if s.plot is not None:
                plots[f"{s.plot_name}.png"] = draw(s.plot, s.plot_size)
    return plots


def draw_generic(
    metrics: list[dict[str, Any]],
    labels: list[str],
    confusions: list[tuple[str, dict[str, Any]]],
    history: list[dict[str, Any]] | None = None,
) -> dict[str, bytes]:
    """The plots any comparison of two or more runs has: metrics.png, confusion.png (when the runs have confusion
    matrices), loss.png (when a training history is given)."""
    plots: dict[str, bytes] = {}
    with _fonts():
        if (png := plot_metric_bars(metrics, labels)) is not None:
            plots["metrics.png"] = png
        if (png := plot_confusions(confusions)) is not None:
            plots["confusion.png"] = png
        if history and (png := plot_history(history)) is not None:
            plots["loss.png"] = png
    return plots


def _fonts() -> Any:
    import matplotlib

    return matplotlib.rc_context({"font.family": hangul_font_families()})


def colors(k: int) -> list[Any]:
    """The report's baseline and candidate colours for two runs; matplotlib's tab10 cycle for more."""
    if k <= 2:
        return list(REPORT_COLORS[:k])
    from matplotlib import colormaps

    return [colormaps["tab10"](i % 10) for i in range(k)]


def draw(plot: Callable[[Figure], None], size: tuple[float, float]) -> bytes:
    """Run a drawing function on a fresh figure of `size` inches; the PNG."""
    fig = _figure(*size)
    plot(fig)
    return _png(fig)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaching the Agg canvas is what selects the backend, for this figure only
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_metric_bars(metrics: list[dict[str, Any]], labels: list[str]) -> bytes | None:
    """One panel per metric (their scales differ), one bar per run with its 95% CI as error bars. A panel whose
    bars are all exactly 0 with nothing to say (the parse-failure rate of runs that never failed to parse) is left
    out; the metrics table still lists it. None when no panel is left."""
    rows = [
        m for m in metrics if not (m["name"] == "parse_failure_rate" and all(e["value"] == 0 for e in m["entries"]))
    ]
    if not rows:
        return None
    k = len(labels)
    ncols = min(4, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = _figure(max(3.0, 0.9 * k + 1.2) * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, row in zip(axes, rows):
        vals: list[float] = []
        errs: list[list[float]] = [[], []]
        cis: list[Any] = []
        for e in row["entries"]:
            v, ci = e["value"], e["ci"]
            vals.append(v)
            cis.append(ci)
            # A CI that does not contain the value (it happens with some estimators) must not give negative bars.
            errs[0].append(max(0.0, v - ci[0]) if ci and ci[0] is not None else 0.0)
            errs[1].append(max(0.0, ci[1] - v) if ci and ci[1] is not None else 0.0)
        ax.bar(range(k), vals, yerr=errs, capsize=6, color=colors(k))
        for x, v in enumerate(vals):
            ax.annotate(f"{v:.3f}", (x, v), xytext=(8, 3), textcoords="offset points", fontsize=8)
        ax.set_xticks(range(k), labels, rotation=0 if k <= 2 else 30, ha="center" if k <= 2 else "right")
        ax.set_title(row["name"], fontsize=10)
        top = max(vals + [ci[1] for ci in cis if ci and ci[1] is not None])
        if 0 <= min(vals) and top <= 1:
            ax.set_ylim(0, 1.08)
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    return _png(fig)


PARSE_FAILURE_COL = "parse_failure"


def _confusion_axes(conf: dict[str, Any]) -> tuple[list[list[float]], list[str], list[str]] | None:
    """(matrix, row labels, column labels); columns may carry an extra 'parse_failure' column."""
    matrix, labels = conf.get("matrix"), [str(x) for x in conf.get("labels") or []]
    if not matrix or not all(isinstance(r, list) for r in matrix):
        return None
    n_rows, n_cols = len(matrix), len(matrix[0])
    if len(labels) == n_cols:
        cols = labels
    elif len(labels) + 1 == n_cols:  # labels name the classes only; the extra column counts parse failures
        cols = labels + [PARSE_FAILURE_COL]
    else:
        cols = [str(i) for i in range(n_cols)]
    true_labels = [c for c in cols if c != PARSE_FAILURE_COL]
    if len(true_labels) == n_rows:
        rows = true_labels
    elif len(cols) == n_rows:
        rows = cols
    else:
        rows = [str(i) for i in range(n_rows)]
    return matrix, rows, cols


def _label_order(labels: list[str]) -> list[str]:
    """Numbers in numeric order ('2' before '10'); other labels in the order the runs list them."""

    def number(x: str) -> float | None:
        try:
            return float(x)
        except ValueError:
            return None

    return sorted(labels, key=lambda x: number(x) or 0.0) if all(number(x) is not None for x in labels) else labels


def shared_confusions(
    runs: list[tuple[str, dict[str, Any]]],
) -> list[tuple[str, list[list[float]], list[str], list[str]]]:
    """Every run's confusion matrix on the same label axis: rows and columns are both the union of all runs' gold
    and predicted labels in `_label_order` (so the diagonal is always "right", and a label only one run predicted
    gets a column in both panels), plus the parse-failure column last when any run has one.
    [(run label, matrix, rows, cols)]."""
    panels = [(label, parsed) for label, conf in runs if (parsed := _confusion_axes(conf)) is not None]
    if not panels:
        return []
    union = _label_order(
        list(dict.fromkeys(x for _, (_, rows, cols) in panels for x in [*cols, *rows] if x != PARSE_FAILURE_COL))
    )
    counts = []
    for _, (matrix, rows, cols) in panels:
        counts.append({(rows[i], cols[j]): v for i, r in enumerate(matrix) for j, v in enumerate(r)})
    out_rows = union
    out_cols = union + ([PARSE_FAILURE_COL] if any(PARSE_FAILURE_COL in p[1][2] for p in panels) else [])
    return [
        (label, [[cell.get((r, c), 0) for c in out_cols] for r in out_rows], out_rows, out_cols)
        for (label, _), cell in zip(panels, counts)
    ]


def plot_confusions(runs: list[tuple[str, dict[str, Any]]]) -> bytes | None:
    """Confusion matrices (a metrics "confusion" entry: {labels, matrix}) side by side on shared axes (rows: true
    label, columns: prediction; `shared_confusions`), counts annotated; None when no entry is a readable matrix."""
    panels = shared_confusions(runs)
    if not panels:
        return None
    size = len(panels[0][3])
    width, height = min(10.0, 2.5 + 0.45 * size), min(10.0, 2.5 + 0.45 * len(panels[0][2]))
    fig = _figure(width * len(panels), height)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    vmax = max(max(max(r) for r in p[1]) for p in panels) or 1  # one colour scale, so the panels compare
    for ax, (label, matrix, rows, cols) in zip(axes, panels):
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        if size <= 25:  # beyond that the numbers overlap; the colours still tell the story
            for i, r in enumerate(matrix):
                for j, v in enumerate(r):
                    ax.text(
                        j, i, f"{v:g}", ha="center", va="center", fontsize=8, color="white" if v > vmax / 2 else "black"
                    )
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("prediction")
        ax.set_ylabel("true label")
        ax.set_title(label)
    return _png(fig)


def plot_history(history: list[dict[str, Any]]) -> bytes | None:
    """Train and eval loss vs step; eval metrics (eval_* other than loss) in a second panel."""

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [
            (e.get("step", i), e[key])
            for i, e in enumerate(history)
            if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    metric_keys = sorted(
        {
            k
            for e in history
            for k in e
            if k.startswith("eval_")
            and k not in _EVAL_BOOKKEEPING
            and isinstance(e[k], (int, float))
            and not isinstance(e[k], bool)
        }
    )
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


def thumbnail_png(path: str, px: int = THUMB_PX) -> bytes | None:
    """The image scaled so its longest side is px; small images are enlarged with nearest-neighbour so
    synthetic pixels stay crisp. None if the file cannot be read (the report still renders)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
            scale = px / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, ValueError):
        return None
