"""Comparing two systems on the same examples: McNemar (exact, and clustered), paired bootstrap, Holm, power.

    mcnemar_exact(correct_a, correct_b)                    # exact test on discordant pairs
    mcnemar_clustered(correct_a, correct_b, groups)        # the same question when examples share groups
    paired_bootstrap(score_a, score_b, groups=groups)      # CI + p-value of mean(b - a), resampling groups
    holm([p1, p2, p3])                                     # Holm-adjusted p-values for several tests at once
    min_detectable_difference(n=300, discordant_rate=0.1)  # smallest accuracy difference found with 80% power
    paired_comparison(correct_a, correct_b, groups)        # all of the above for an accuracy comparison

Clustered McNemar. Exact McNemar treats each discordant example as an independent fair coin under H0. When
examples share groups, the discordant examples of one group move together and the exact test is too eager:
on a true null with a group-level preference of random sign (40 groups of 4-15 examples) it rejected 26.5% of
datasets at 5%, the clustered test 4.0% (`benchmarks/interval_coverage.py`, 1000 datasets). `mcnemar_clustered` sums the discordance within each group, d_g = b_g - c_g (b: A right and B
wrong; c: the reverse), and tests S = sum_g d_g against its sign-flip distribution: under H0 (the two systems
are exchangeable within each group) every d_g is equally likely to have either sign, independently across
groups, so the exact null distribution of S is that of sum_g e_g |d_g| with e_g = +-1 fair coins. It is
computed exactly (a convolution of binomials, one per distinct |d_g|), not sampled. With one example per group
d_g is -1, 0 or +1 and the test IS exact McNemar (same p-value); its normal approximation
S / sqrt(sum d_g^2) is the clustered McNemar statistic of Durkalski et al. (2003, Stat Med 22:2417), reported
as `z`. Chosen over a paired cluster bootstrap p-value because it is exact at small numbers of discordant
groups, where bootstrap p-values are coarse, and reduces to the test users already know. The paired cluster
bootstrap gives the interval of the difference beside it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Union

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom, binomtest, norm
from scipy.stats import t as student_t

from vlmtune.stats.resample import Clusters, bootstrap_method, clusters_of, mean_replicates, percentile_ci

Bools = Union[Sequence[bool], np.ndarray]  # one value per example: a list or a NumPy array
Floats = Union[Sequence[float], np.ndarray]


def _paired_bools(correct_a: Bools, correct_b: Bools) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-D and paired, got shapes {a.shape} and {b.shape}")
    return a, b


def mcnemar_exact(correct_a: Bools, correct_b: Bools) -> dict[str, Any]:
    """Exact McNemar test: are systems A and B right on different examples more than chance allows?

    b = examples A gets right and B gets wrong, c = the reverse. Under H0 each discordant pair is a
    fair coin, so p = two-sided binomial test of b successes in b + c trials at 0.5 (scipy).
    No discordant pairs -> p = 1.0. `statistic` = min(b, c), as statsmodels reports it.
    """
    a, bb = _paired_bools(correct_a, correct_b)
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n_disc = b + c
    p = 1.0 if n_disc == 0 else float(binomtest(b, n_disc, 0.5, alternative="two-sided").pvalue)
    return {
        "b": b,
        "c": c,
        "n_discordant": n_disc,
        "statistic": min(b, c),
        "p_value": p,
        "n": int(a.size),
        "method": "exact McNemar (binomial test on discordant pairs)",
    }


def sign_flip_pvalue(d: Sequence[int] | np.ndarray) -> float:
    """Two-sided exact p-value of S = sum(d) under independent random signs of the integers d:
    P(|sum_g e_g |d_g|| >= |S|), the distribution built exactly by convolving one binomial per distinct |d|."""
    mags = np.abs(np.asarray(d, dtype=np.int64))
    mags = mags[mags > 0]
    s_obs = abs(int(np.sum(d)))
    if mags.size == 0:
        return 1.0
    total = int(mags.sum())
    pmf = np.zeros(2 * total + 1)  # index s + total for s in -total..total
    pmf[total] = 1.0
    for u, k in zip(*np.unique(mags, return_counts=True)):
        u, k = int(u), int(k)
        weights = binom.pmf(np.arange(k + 1), k, 0.5)  # j of the k groups positive: shift u * (2j - k)
        nxt = np.zeros_like(pmf)
        for j, w in enumerate(weights):
            shift = u * (2 * j - k)
            if shift >= 0:
                nxt[shift:] += w * pmf[: pmf.size - shift]
            else:
                nxt[:shift] += w * pmf[-shift:]
        pmf = nxt
    s = np.arange(-total, total + 1)
    return float(min(1.0, pmf[np.abs(s) >= s_obs].sum()))


def mcnemar_clustered(
    correct_a: Bools, correct_b: Bools, groups: Sequence[Hashable | None] | None = None
) -> dict[str, Any]:
    """Clustered McNemar: exact sign-flip test of S = sum over groups of (b_g - c_g) (module docstring).

    Returns {"b", "c", "statistic" (S), "z" (Durkalski's S / sqrt(sum d_g^2)), "p_value", "n", "clusters",
    "discordant_groups", "method"}. With one example per group the p-value equals `mcnemar_exact`'s.
    """
    a, bb = _paired_bools(correct_a, correct_b)
    cl = clusters_of(groups, a.size)
    d_i = a.astype(np.int64) - bb.astype(np.int64)
    d = np.bincount(cl.codes, weights=d_i, minlength=cl.count).astype(np.int64) if a.size else np.zeros(0, int)
    s = int(d.sum())
    ss = float((d.astype(float) ** 2).sum())
    return {
        "b": int(np.sum(a & ~bb)),
        "c": int(np.sum(~a & bb)),
        "statistic": s,
        "z": s / math.sqrt(ss) if ss > 0 else 0.0,
        "p_value": sign_flip_pvalue(d),
        "n": int(a.size),
        "clusters": cl.count,
        "discordant_groups": int(np.count_nonzero(d)),
        "method": f"clustered McNemar (exact sign-flip test over {cl.count} groups)",
    }


def paired_bootstrap(
    values_a: Floats,
    values_b: Floats,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence[Hashable | None] | None = None,
) -> dict[str, Any]:
    """Paired bootstrap for a per-example score: diff = mean(b - a) (positive: B is better).

    Each resample draws groups with replacement (`groups`; None: each example alone) and keeps both systems'
    values of every drawn example, so the pairing and the within-group correlation are both kept.
    ci: expanded percentile CI (`vlmtune.stats.resample`) of the resampled mean difference. p_value: two-sided, from the bootstrap
    distribution shifted to the null (how often |d* - d| >= |d|), with +1 smoothing so it is never 0.
    Returns {"diff", "ci", "p_value", "n", "clusters", "n_boot", "method"}.
    """
    a = np.asarray(values_a, dtype=float)
    b = np.asarray(values_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values_a and values_b must be 1-D and paired, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return {
            "diff": float("nan"),
            "ci": [float("nan"), float("nan")],
            "p_value": float("nan"),
            "n": 0,
            "clusters": 0,
            "n_boot": n_boot,
            "method": bootstrap_method(n_boot, clusters_of(None, 0), paired=True),
        }
    cl = clusters_of(groups, a.size)
    d = b - a
    diff = float(d.mean())
    reps = mean_replicates(d, cl, n_boot, seed)
    lo, hi = percentile_ci(reps, alpha, cl.count)
    # tolerance so an all-zero difference (floating noise) still reads as p = 1
    extreme = np.abs(reps - diff) >= abs(diff) - 1e-12
    p = float((1 + np.sum(extreme)) / (n_boot + 1))
    return {
        "diff": diff,
        "ci": [lo, hi],
        "p_value": min(1.0, p),
        "n": int(d.size),
        "clusters": cl.count,
        "n_boot": int(n_boot),
        "method": bootstrap_method(n_boot, cl, paired=True),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): sort ascending, p_(i) * (m - i + 1), running
    maximum, capped at 1. Rejecting where adjusted p <= alpha controls the family-wise error rate at alpha.
    NaN stays NaN and does not count toward m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
        out[order] = adj
    return out.tolist()


def _quantiles(alpha: float, power: float, clusters: int | None) -> tuple[float, float]:
    """Two-sided test quantile and power quantile: normal, or Student t with G-1 df for G groups."""
    if clusters is not None and clusters >= 2:
        dist: Any = student_t(clusters - 1)
        return float(dist.ppf(1 - alpha / 2)), float(dist.ppf(power))
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


def min_detectable_difference(
    n: float,
    discordant_rate: float,
    *,
    deff: float = 1.0,
    clusters: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest accuracy difference |p_B - p_A| a two-sided McNemar test at `alpha` detects with `power`.

    Connor's (1987, Biometrics 43:207) normal approximation for paired proportions: with N = n / deff effective
    pairs and discordant proportion pi, the difference delta is detected with the given power when
        sqrt(N) * delta = z_{1-alpha/2} * sqrt(pi) + z_power * sqrt(pi - delta^2),
    solved in closed form for delta. A difference needs at least that share of discordant pairs, so pi is taken
    as max(discordant_rate, delta) (solved numerically when delta exceeds the rate). With `clusters` = G the
    normal quantiles become Student t with G-1 degrees of freedom. NaN when no difference up to 1 is detectable.
    """
    big_n = n / deff
    za, zb = _quantiles(alpha, power, clusters)
    if big_n <= 0 or not big_n > za**2:
        return float("nan")
    pi = float(discordant_rate)
    if pi > 0:
        delta = (za * math.sqrt(pi * big_n) + zb * math.sqrt(max(pi * (big_n + zb**2 - za**2), 0.0))) / (big_n + zb**2)
        if delta <= pi:
            return float(delta)

    def gap(x: float) -> float:  # pi = delta: every discordant pair favours one system
        return math.sqrt(big_n) * x - za * math.sqrt(x) - zb * math.sqrt(max(x - x * x, 0.0))

    return float(brentq(gap, 1e-12, 1.0)) if gap(1.0) >= 0 else float("nan")


def _difference_deff(d_i: np.ndarray, cl: Clusters) -> float:
    """Design effect of the mean of per-example differences d_i (in -1, 0, 1) over groups; the worst case
    (a group counts once) when the differences do not vary, as for proportions."""
    n, g = d_i.size, cl.count
    if not cl.repeated or g < 2:
        return 1.0
    mean = d_i.mean()
    v_iid = float(((d_i - mean) ** 2).sum() / (n * (n - 1)))
    if v_iid <= 0:
        return float((cl.sizes.astype(float) ** 2).sum() / n)
    d_g = np.bincount(cl.codes, weights=d_i, minlength=g)
    v_cluster = g / (g - 1) * float(((d_g - mean * cl.sizes) ** 2).sum()) / n**2
    return max(1.0, v_cluster / v_iid)


def paired_mde(
    correct_a: Bools,
    correct_b: Bools,
    groups: Sequence[Hashable | None] | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """The minimum detectable accuracy difference for this test set: n, its groups (design effect of the
    per-example difference, t quantiles with G-1 df) and the observed discordant rate.
    Returns {"mde", "n", "clusters", "discordant_rate", "deff", "alpha", "power", "method"}."""
    a, b = _paired_bools(correct_a, correct_b)
    cl = clusters_of(groups, a.size)
    d_i = a.astype(float) - b.astype(float)
    rate = float(np.mean(d_i != 0)) if a.size else float("nan")
    deff = _difference_deff(d_i, cl) if a.size else 1.0
    mde = (
        min_detectable_difference(
            a.size, rate, deff=deff, clusters=cl.count if cl.repeated else None, alpha=alpha, power=power
        )
        if a.size
        else float("nan")
    )
    where = f"{cl.count} groups, design effect {deff:.2f}, t with {cl.count - 1} df" if cl.repeated else "independent"
    return {
        "mde": mde,
        "n": int(a.size),
        "clusters": cl.count,
        "discordant_rate": rate,
        "deff": deff,
        "alpha": alpha,
        "power": power,
        "method": f"McNemar power, normal approximation (Connor 1987; {where})",
    }


def paired_comparison(
    correct_a: Bools,
    correct_b: Bools,
    groups: Sequence[Hashable | None] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Everything a report says about an accuracy comparison of B against A on the same examples:
    {"n", "clusters", "mcnemar" (exact), "mcnemar_clustered" (None unless a group repeats),
    "accuracy_difference" (paired bootstrap, by group), "mde" (paired_mde)}."""
    a, b = _paired_bools(correct_a, correct_b)
    cl = clusters_of(groups, a.size)
    return {
        "n": int(a.size),
        "clusters": cl.count,
        "mcnemar": mcnemar_exact(a, b),
        "mcnemar_clustered": mcnemar_clustered(a, b, groups) if cl.repeated else None,
        "accuracy_difference": paired_bootstrap(
            a.astype(float), b.astype(float), n_boot=n_boot, seed=seed, alpha=alpha, groups=groups
        ),
        "mde": paired_mde(a, b, groups, alpha=alpha),
    }
