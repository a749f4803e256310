"""Uncertainty and significance for evaluation numbers: bootstrap CIs, McNemar, paired bootstrap.

    bootstrap_ci([1, 0, 1, 1], seed=0)                      # 95% percentile CI of the mean
    bootstrap_metric(y_true, y_pred, f1_fn)                 # CI of any paired metric (resamples pairs)
    mcnemar_exact(correct_base, correct_tuned)              # exact test on discordant pairs
    paired_bootstrap(score_base, score_tuned)               # CI + p-value of mean(b - a)

Everything is deterministic given `seed`: the same seed draws the same resamples, so two metrics
computed with one seed are resampled on the same example sets.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import binomtest

# Cap on index-matrix elements per chunk: n_boot x n int64 indices for 20k examples would be 320 MB
# in one go; chunking keeps memory flat while the result stays identical for a given seed.
_MAX_CHUNK_ELEMS = 1 << 22


def metric_entry(value: float, ci: Sequence[float], n: int) -> dict[str, Any]:
    """One entry of a metrics dict: {"value": float, "ci": [lo, hi], "n": int} (plain Python types)."""
    return {"value": float(value), "ci": [float(ci[0]), float(ci[1])], "n": int(n)}


def proportion_entry(hits: Sequence[bool], *, groups: Sequence[Any] | None = None, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """A metrics entry for a proportion (accuracy-like): value, 95% interval, n.

    `groups` (each example's `group`) is accepted for cluster-aware intervals; today the interval is the
    percentile bootstrap over examples."""
    arr = np.asarray(hits, dtype=float)
    if arr.size == 0:
        return metric_entry(float("nan"), (float("nan"), float("nan")), 0)
    return metric_entry(arr.mean(), bootstrap_ci(arr, n_boot=n_boot, seed=seed), arr.size)


def bootstrap_distribution(n: int, fn: Callable[[np.ndarray], np.ndarray], n_boot: int = 2000,
                           seed: int = 0) -> np.ndarray:
    """Replicates of a statistic under resampling of n items with replacement.

    `fn` gets an index matrix [b, n] (one resample per row) and returns [b] or [b, ...] values.
    Returns the stacked replicates [n_boot] or [n_boot, ...].
    """
    if n <= 0:
        raise ValueError(f"bootstrap needs at least one item, got n={n}")
    if n_boot <= 0:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _MAX_CHUNK_ELEMS // n))
    out = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))  # [b, n]
        out.append(np.asarray(fn(idx)))
        done += b
    return np.concatenate(out, axis=0)


def percentile_ci(replicates: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval [alpha/2, 1 - alpha/2] of 1-D bootstrap replicates."""
    lo, hi = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float] | np.ndarray, stat: Callable[..., Any] = np.mean,
                 n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat(values)`; (nan, nan) for no values.

    `stat` should accept `axis=` (np.mean, np.median, ...) so resamples are scored in one numpy call;
    other callables are applied row by row.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return float("nan"), float("nan")

    def fn(idx: np.ndarray) -> np.ndarray:
        samples = arr[idx]  # [b, n]
        try:
            return np.asarray(stat(samples, axis=1), dtype=float)
        except TypeError:  # stat has no axis= parameter
            return np.array([stat(row) for row in samples], dtype=float)

    return percentile_ci(bootstrap_distribution(arr.size, fn, n_boot, seed), alpha)


def bootstrap_metric(y_true: Sequence[Any], y_pred: Sequence[Any], fn: Callable[[Any, Any], Any],
                     n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                     vectorized: bool = False) -> tuple[float, float]:
    """Percentile bootstrap CI of a paired metric `fn(y_true, y_pred)` (F1, accuracy, ...).

    Pairs are resampled together. With `vectorized=True`, `fn` gets [b, n] arrays and returns [b]
    (fast path); otherwise it is called once per resample with 1-D arrays.
    """
    yt, yp = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if len(yt) != len(yp):
        raise ValueError(f"y_true and y_pred differ in length: {len(yt)} vs {len(yp)}")
    if len(yt) == 0:
        return float("nan"), float("nan")
    # keep numeric dtypes when possible so vectorized fns can do arithmetic
    yt, yp = _tighten(yt), _tighten(yp)

    def boot(idx: np.ndarray) -> np.ndarray:
        if vectorized:
            return np.asarray(fn(yt[idx], yp[idx]), dtype=float)
        return np.array([fn(yt[row], yp[row]) for row in idx], dtype=float)

    return percentile_ci(bootstrap_distribution(len(yt), boot, n_boot, seed), alpha)


def _tighten(arr: np.ndarray) -> np.ndarray:
    """An object array as its natural numpy dtype (int, float, str) when its items allow it."""
    try:
        return np.array(arr.tolist())
    except (ValueError, TypeError):  # ragged or mixed items: leave as objects
        return arr


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test: are systems A and B right on different examples more than chance allows?

    b = examples A gets right and B gets wrong, c = the reverse. Under H0 each discordant pair is a
    fair coin, so p = two-sided binomial test of b successes in b + c trials at 0.5 (scipy).
    No discordant pairs -> p = 1.0. `statistic` = min(b, c), as statsmodels reports it.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-D and paired, got shapes {a.shape} and {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n_disc = b + c
    p = 1.0 if n_disc == 0 else float(binomtest(b, n_disc, 0.5, alternative="two-sided").pvalue)
    return {"b": b, "c": c, "n_discordant": n_disc, "statistic": min(b, c), "p_value": p, "n": int(a.size)}


def paired_bootstrap(values_a: Sequence[float], values_b: Sequence[float], n_boot: int = 2000,
                     seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Paired bootstrap for a continuous per-example score: diff = mean(b - a) (positive: B is better).

    ci: percentile CI of the resampled mean difference. p_value: two-sided, from the bootstrap
    distribution shifted to the null (how often |d* - d| >= |d|), with +1 smoothing so it is never 0.
    """
    a = np.asarray(values_a, dtype=float)
    b = np.asarray(values_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values_a and values_b must be 1-D and paired, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return {"diff": float("nan"), "ci": [float("nan"), float("nan")], "p_value": float("nan"),
                "n": 0, "n_boot": n_boot}
    d = b - a
    diff = float(d.mean())
    reps = bootstrap_distribution(d.size, lambda idx: d[idx].mean(axis=1), n_boot, seed)
    lo, hi = percentile_ci(reps, alpha)
    # tolerance so an all-zero difference (floating noise) still reads as p = 1
    extreme = np.abs(reps - diff) >= abs(diff) - 1e-12
    p = float((1 + np.sum(extreme)) / (n_boot + 1))
    return {"diff": diff, "ci": [lo, hi], "p_value": min(1.0, p), "n": int(d.size), "n_boot": int(n_boot)}
