"""Intervals for proportions (accuracy, exact match, R@k, parse-failure rate): score intervals that hold at 0 and 1.

    wilson_ci(300, 300)                            # (0.9874, 1.0): never [1, 1]
    clopper_pearson_ci(299, 300)                   # exact (conservative) interval
    proportion_entry(hits, groups=groups)          # the metrics entry; cluster-aware when groups repeat

A percentile bootstrap of a proportion collapses at 0 and 1: 300 hits out of 300 resample to 300 out of 300
every time, and the interval [1, 1] says there is no uncertainty. Score intervals do not:

- Wilson (1927): the set of p whose score test accepts the data; 95% coverage close to nominal for n in the
  tens and up, and at k = 0 or k = n it is [0, 1 - n/(n + z^2)] or [n/(n + z^2), 1] (300/300: [0.987, 1]).
- Clopper-Pearson (1934): inverts two one-sided binomial tests (beta quantiles); coverage at least nominal,
  so wider than needed (about 96% at n = 300). Available as method="clopper-pearson".

When examples share groups (the rounds of one dialogue), k is not binomial: correlated examples add less
information than independent ones. The interval then uses an effective sample size (Kish's design effect,
as recommended for clustered surveys by Korn & Graubard 1998 and Dean & Pagano 2015):

    v_cluster = G/(G-1) * sum_g (y_g - p m_g)^2 / n^2     (y_g hits and m_g examples of group g; the
                                                           cluster-robust variance of the ratio estimator)
    deff      = max(1, v_cluster / (p(1-p)/(n-1)))        (never credited with more than n examples)
    n_eff     = n / deff * (z / t_{G-1})^2                 (Korn & Graubard's degrees-of-freedom adjustment:
                                                           G groups give G-1 degrees of freedom, not n-1)

and Wilson (or Clopper-Pearson) is computed for p * n_eff successes in n_eff trials. Why this and not a cluster
bootstrap of the proportion: the bootstrap would collapse at 0 and 1 exactly as before, while the score
interval keeps its shape and only its sample size changes. At p = 0 or 1 the data show no variation, so the
design effect cannot be estimated; the survey convention (deff = 1) then reports full precision, which covered
74.7% of strongly clustered datasets (p = 0.995, 100 groups of 10, ICC 0.5; this rule: 96.1%). Here the
interval instead assumes the worst, that examples of a group are copies of each other: n_eff = n^2 / sum m_g^2
(= G for equal groups), so 300/300 in 30 groups of 10 reads [0.878, 1] (with the degrees-of-freedom
adjustment), and 300/300 in 300 single-example groups stays [0.987, 1]. One consequence: with one wrong answer the design effect becomes estimable and may be
small, so 299/300 can get a narrower interval than 300/300; the one failure says the failures are not clumped.
Known limit: when p is near 0 or 1 and the rare outcomes sit in a few groups, the estimated design effect is
noisy and coverage falls below nominal: 90.3% and 88.1% at p = 0.95 and 0.97 with 30 groups of 10 and ICC 0.3
and 0.5 (Clopper-Pearson with the same n_eff: 92.6% and 90.1%). Figures: `benchmarks/interval_coverage.py`,
1000 datasets per scenario (standard error about 0.7 points).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, norm
from scipy.stats import t as student_t

from vlmtune.stats.resample import NAN_CI, clusters_of, metric_entry

METHODS = ("wilson", "clopper-pearson")


def _z(alpha: float) -> float:
    return float(norm.ppf(1 - alpha / 2))


def wilson_ci(k: Any, n: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """Wilson score interval for k successes in n trials (arrays broadcast; k and n may be non-integer, as with
    an effective sample size). Exactly 0 / 1 at k = 0 / k = n; NaN where n = 0."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    z2 = _z(alpha) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z2 / n
        center = (p + z2 / (2 * n)) / denom
        half = np.sqrt(z2) * np.sqrt(np.maximum(p * (1 - p), 0) / n + z2 / (4 * n * n)) / denom
    lo = np.where(k <= 0, 0.0, np.clip(center - half, 0.0, 1.0))
    hi = np.where(k >= n, 1.0, np.clip(center + half, 0.0, 1.0))
    bad = ~(n > 0)
    return _out(np.where(bad, np.nan, lo)), _out(np.where(bad, np.nan, hi))


def clopper_pearson_ci(k: Any, n: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """Clopper-Pearson ("exact") interval: beta quantiles alpha/2 of Beta(k, n-k+1) and 1-alpha/2 of
    Beta(k+1, n-k); 0 at k = 0 and 1 at k = n. Arrays broadcast; NaN where n = 0."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        lo = np.where(k <= 0, 0.0, beta.ppf(alpha / 2, np.maximum(k, 1e-300), n - k + 1))
        hi = np.where(k >= n, 1.0, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-300)))
    bad = ~(n > 0)
    return _out(np.where(bad, np.nan, lo)), _out(np.where(bad, np.nan, hi))


def _out(x: np.ndarray) -> Any:
    return float(x) if x.ndim == 0 else x


def proportion_ci(k: Any, n: Any, alpha: float = 0.05, method: str = "wilson") -> tuple[Any, Any]:
    """`wilson_ci` or `clopper_pearson_ci` by name."""
    if method == "wilson":
        return wilson_ci(k, n, alpha)
    if method == "clopper-pearson":
        return clopper_pearson_ci(k, n, alpha)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def effective_size(hits_per_group: Any, sizes: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """(design effect, effective n) of a proportion from per-group hits y [..., G] and group sizes m [G]
    (the module docstring's formulas; vectorized over leading dimensions of y, e.g. simulated datasets)."""
    y = np.asarray(hits_per_group, dtype=float)
    m = np.asarray(sizes, dtype=float)
    n, g = float(m.sum()), m.size
    if g < 2:
        return _out(np.full(y.shape[:-1], np.inf)), _out(np.zeros(y.shape[:-1]))  # one group: no df at all
    p = y.sum(axis=-1) / n
    v_cluster = g / (g - 1) * ((y - p[..., None] * m) ** 2).sum(axis=-1) / n**2
    v_iid = p * (1 - p) / (n - 1)
    flat = v_iid <= 0  # p = 0 or 1: no variation to estimate deff from
    with np.errstate(invalid="ignore", divide="ignore"):
        deff = np.maximum(1.0, v_cluster / np.where(flat, 1.0, v_iid))
    deff = np.where(flat, float((m**2).sum()) / n, deff)  # worst case: a group counts once
    df_factor = (_z(alpha) / float(student_t.ppf(1 - alpha / 2, g - 1))) ** 2
    return _out(deff), _out(n / deff * df_factor)


@dataclass(frozen=True)
class ProportionCI:
    """A proportion with its interval and how it was made."""

    value: float
    ci: tuple[float, float]
    n: int
    clusters: int
    method: str
    deff: float | None = None  # design effect (only when groups repeat)
    n_eff: float | None = None  # effective sample size behind the interval (only when groups repeat)


def proportion_interval(
    hits: Sequence[bool] | np.ndarray,
    groups: Sequence[Hashable | None] | None = None,
    *,
    alpha: float = 0.05,
    method: str = "wilson",
) -> ProportionCI:
    """The proportion of true `hits` with a score interval; design-effect adjusted when a group repeats."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    h = np.asarray(hits, dtype=float)
    if h.ndim != 1:
        raise ValueError(f"hits must be 1-D, got shape {h.shape}")
    if h.size == 0:
        return ProportionCI(float("nan"), NAN_CI, 0, 0, method)
    cl = clusters_of(groups, h.size)
    k, n = float(h.sum()), h.size
    if not cl.repeated:
        lo, hi = proportion_ci(k, n, alpha, method)
        return ProportionCI(k / n, (lo, hi), n, cl.count, method)
    y = np.bincount(cl.codes, weights=h, minlength=cl.count)
    deff, n_eff = effective_size(y, cl.sizes, alpha)
    if cl.count < 2:
        lo, hi = 0.0, 1.0
        label = f"{method} with design effect (one group of {n}: nothing to say beyond [0, 1])"
    else:
        lo, hi = proportion_ci(k / n * n_eff, n_eff, alpha, method)
        assumed = ", assumed: no variation to estimate it" if k in (0, n) else ""
        label = (
            f"{method} with design effect (deff {deff:.2f}{assumed}; effective n {n_eff:.1f} from {cl.count} groups)"
        )
    return ProportionCI(k / n, (float(lo), float(hi)), n, cl.count, label, float(deff), float(n_eff))


def proportion_entry(
    hits: Sequence[bool] | np.ndarray,
    *,
    groups: Sequence[Hashable | None] | None = None,
    alpha: float = 0.05,
    method: str = "wilson",
    n_boot: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """A metrics entry for a proportion (accuracy-like): {"value", "ci", "n", "clusters", "method"} plus
    "deff" and "n_eff" when groups repeat. The single place where proportions get their interval.

    `n_boot` and `seed` are accepted so callers can pass the same settings to every entry function; a score
    interval draws no resamples, so they change nothing.
    """
    r = proportion_interval(hits, groups, alpha=alpha, method=method)
    extra = {} if r.deff is None else {"deff": r.deff, "n_eff": r.n_eff}
    return metric_entry(r.value, r.ci, r.n, clusters=r.clusters, method=r.method, **extra)
