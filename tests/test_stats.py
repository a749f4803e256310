"""vlmtune.stats under test: each interval's coverage measured by simulation, with clustered data where the
naive interval is too narrow; score intervals at 0 and n; the paired bootstrap against a paired t-interval and
exact enumeration; clustered McNemar's size; Holm and the minimum detectable difference against hand cases.

Every simulation is seeded, so each run draws the same datasets; 95% intervals must cover 93-97% of them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm, ttest_rel
from scipy.stats import t as student_t

from vlmtune.stats import (
    bootstrap_ci,
    bootstrap_entry,
    clopper_pearson_ci,
    cluster_bootstrap_distribution,
    clusters_of,
    effective_size,
    holm,
    mcnemar_clustered,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap,
    paired_comparison,
    paired_mde,
    proportion_entry,
    proportion_interval,
    sign_flip_pvalue,
    wilson_ci,
)

NOMINAL = (0.93, 0.97)  # what a 95% interval must cover over the simulated datasets
Z = norm.ppf(0.975)


def _covers(lo, hi, truth) -> float:
    return float(np.mean((np.asarray(lo) <= truth) & (truth <= np.asarray(hi))))


# ---------------------------------------------------------------- simulated data
def clustered_binary(rng: np.random.Generator, groups: int = 40, p: float = 0.75, icc: float = 0.3):
    """Hits whose rate varies by group (beta-binomial, intra-group correlation `icc`), 2-14 examples a group."""
    sizes = rng.integers(2, 15, size=groups)
    rate = rng.beta(p * (1 - icc) / icc, (1 - p) * (1 - icc) / icc, size=groups)
    return rng.random(sizes.sum()) < np.repeat(rate, sizes), np.repeat(np.arange(groups), sizes)


def clustered_values(rng: np.random.Generator, groups: int = 40, mean: float = 1.0):
    """A skewed per-example value (exponential noise) around a group effect N(0, 1): strongly clustered."""
    sizes = rng.integers(2, 15, size=groups)
    noise = rng.exponential(1.0, sizes.sum()) - 1.0
    return mean + np.repeat(rng.normal(0, 1, groups), sizes) + noise, np.repeat(np.arange(groups), sizes)


def clustered_pairs(rng: np.random.Generator, groups: int = 40, diff: float = 0.2):
    """Paired scores a, b of the same examples: a shared group effect (pairing matters) plus a group effect on
    the difference (clustering matters); the true mean difference is `diff`."""
    sizes = rng.integers(2, 15, size=groups)
    n = sizes.sum()
    shared = np.repeat(rng.normal(0, 1, groups), sizes)
    a = shared + rng.normal(0, 0.5, n)
    b = shared + diff + np.repeat(rng.normal(0, 0.5, groups), sizes) + rng.normal(0, 0.5, n)
    return a, b, np.repeat(np.arange(groups), sizes)


# ---------------------------------------------------------------- score intervals at 0 and n
def test_wilson_holds_at_zero_and_n() -> None:
    lo, hi = wilson_ci(300, 300)
    assert (round(lo, 3), hi) == (0.987, 1.0) and lo == pytest.approx(300 / (300 + Z**2))
    assert wilson_ci(0, 300) == (0.0, pytest.approx(Z**2 / (300 + Z**2)))
    lo, hi = wilson_ci(299, 300)
    assert (round(lo, 3), round(hi, 3)) == (0.981, 0.999)
    for k in (0, 1, 17, 150, 299, 300):
        ref = binomtest(k, 300).proportion_ci(method="wilson")
        assert wilson_ci(k, 300) == pytest.approx((ref.low, ref.high), abs=1e-12)
        ref = binomtest(k, 300).proportion_ci(method="exact")
        assert clopper_pearson_ci(k, 300) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert all(math.isnan(v) for v in wilson_ci(0, 0))


def test_proportion_entry_names_its_method_and_counts() -> None:
    e = proportion_entry([True] * 300)
    assert e["method"] == "wilson" and (e["n"], e["clusters"]) == (300, 300)
    assert e["ci"][0] == pytest.approx(0.98736, abs=1e-5) and e["ci"][1] == 1.0
    # singleton groups are no groups: the same entry
    assert proportion_entry([True] * 300, groups=[f"g{i}" for i in range(300)]) == e
    assert proportion_entry([True] * 300, method="clopper-pearson")["method"] == "clopper-pearson"
    empty = proportion_entry([])
    assert empty["n"] == 0 and math.isnan(empty["value"]) and empty["method"] == "wilson"
    with pytest.raises(ValueError, match="method"):
        proportion_entry([True], method="wald")


def test_design_effect_by_hand() -> None:
    # 4 groups of 2 with 2, 2, 0, 1 hits: p = 5/8
    hits = [1, 1, 1, 1, 0, 0, 1, 0]
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    p, n, g = 5 / 8, 8, 4
    v_cluster = g / (g - 1) * ((2 - 2 * p) ** 2 * 2 + (0 - 2 * p) ** 2 + (1 - 2 * p) ** 2) / n**2
    deff = v_cluster / (p * (1 - p) / (n - 1))
    n_eff = n / deff * (Z / student_t.ppf(0.975, g - 1)) ** 2
    r = proportion_interval(hits, groups)
    assert r.deff == pytest.approx(deff) and r.n_eff == pytest.approx(n_eff)
    assert r.ci == pytest.approx(wilson_ci(p * n_eff, n_eff))
    assert (r.n, r.clusters) == (8, 4) and r.method.startswith("wilson with design effect (deff 1.71")


def test_design_effect_at_the_boundary_and_with_one_group() -> None:
    # 300 of 300 right in 30 groups of 10: no variation to estimate deff from, so a group counts once
    r = proportion_interval([True] * 300, [i // 10 for i in range(300)])
    n_eff = 30 * (Z / student_t.ppf(0.975, 29)) ** 2
    assert r.n_eff == pytest.approx(n_eff) and r.ci == pytest.approx(wilson_ci(n_eff, n_eff))
    assert round(r.ci[0], 3) == 0.878 and r.ci[1] == 1.0 and "assumed" in r.method
    one = proportion_interval([True, False, True], ["x", "x", "x"])
    assert one.ci == (0.0, 1.0) and one.clusters == 1


def test_copies_in_one_group_add_no_information() -> None:
    """Four augmented copies of every example, each set in its source's group: the cluster-aware intervals
    stay (close to) those of the originals, while ignoring the groups would claim twice the precision."""
    rng = np.random.default_rng(3)
    hits = rng.random(200) < 0.7
    values = rng.exponential(1.0, 200)
    copies, groups = np.repeat(hits, 4), np.repeat(np.arange(200), 4)
    base = proportion_interval(hits)
    grouped = proportion_interval(copies, groups)
    assert grouped.ci == pytest.approx(base.ci, abs=0.004)
    naive = proportion_interval(copies)
    assert (naive.ci[1] - naive.ci[0]) < 0.55 * (base.ci[1] - base.ci[0])
    # the cluster bootstrap of a mean is exactly the original bootstrap: same draws, same group means
    assert bootstrap_ci(np.repeat(values, 4), groups=groups) == pytest.approx(bootstrap_ci(values), abs=1e-12)


# ---------------------------------------------------------------- coverage: proportions
@pytest.mark.parametrize("p", [0.8, 0.97])
def test_wilson_and_clopper_pearson_cover_independent_examples(p: float) -> None:
    k = np.random.default_rng(11).binomial(300, p, size=20_000)  # 20,000 datasets of 300 examples
    assert NOMINAL[0] <= _covers(*wilson_ci(k, 300), p) <= NOMINAL[1]
    assert NOMINAL[0] <= _covers(*clopper_pearson_ci(k, 300), p) <= NOMINAL[1]


def test_design_effect_intervals_cover_clustered_proportions() -> None:
    rng = np.random.default_rng(12)
    data = [clustered_binary(rng) for _ in range(1000)]  # 40 groups, ICC 0.3
    naive = [proportion_interval(h).ci for h, _ in data]
    wilson = [proportion_interval(h, g).ci for h, g in data]
    exact = [proportion_interval(h, g, method="clopper-pearson").ci for h, g in data]
    assert _covers(*zip(*naive), 0.75) < 0.85  # independence assumed: far too narrow
    assert NOMINAL[0] <= _covers(*zip(*wilson), 0.75) <= NOMINAL[1]
    assert NOMINAL[0] <= _covers(*zip(*exact), 0.75) <= NOMINAL[1]


def test_vectorized_design_effect_matches_the_entry() -> None:
    rng = np.random.default_rng(4)
    sizes = np.array([3, 5, 2, 7, 4, 6])
    y = rng.binomial(sizes, 0.6, size=(5, sizes.size))  # 5 datasets at once
    deff, n_eff = effective_size(y, sizes)
    for row, d, ne in zip(y, deff, n_eff):
        hits = np.concatenate([[1] * int(k) + [0] * int(m - k) for k, m in zip(row, sizes)])
        r = proportion_interval(hits, np.repeat(np.arange(sizes.size), sizes))
        assert (r.deff, r.n_eff) == pytest.approx((d, ne))


# ---------------------------------------------------------------- coverage: bootstrap
def test_bootstrap_covers_independent_means() -> None:
    rng = np.random.default_rng(13)
    cis = [bootstrap_ci(rng.gamma(2.0, 0.5, 100), n_boot=1000, seed=i) for i in range(1000)]  # skewed, mean 1
    assert NOMINAL[0] <= _covers(*zip(*cis), 1.0) <= NOMINAL[1]


def test_cluster_bootstrap_covers_clustered_means_where_the_naive_one_does_not() -> None:
    rng = np.random.default_rng(14)
    data = [clustered_values(rng) for _ in range(1000)]
    cluster = [bootstrap_ci(x, n_boot=1000, seed=i, groups=g) for i, (x, g) in enumerate(data)]
    naive = [bootstrap_ci(x, n_boot=500, seed=i) for i, (x, _) in enumerate(data[:200])]
    assert NOMINAL[0] <= _covers(*zip(*cluster), 1.0) <= NOMINAL[1]
    assert _covers(*zip(*naive), 1.0) < 0.85


def test_paired_cluster_bootstrap_covers_the_difference() -> None:
    rng = np.random.default_rng(15)
    data = [clustered_pairs(rng) for _ in range(1000)]
    cluster = [paired_bootstrap(a, b, n_boot=1000, seed=i, groups=g)["ci"] for i, (a, b, g) in enumerate(data)]
    naive = [paired_bootstrap(a, b, n_boot=500, seed=i)["ci"] for i, (a, b, _) in enumerate(data[:200])]
    assert NOMINAL[0] <= _covers(*zip(*cluster), 0.2) <= NOMINAL[1]
    assert _covers(*zip(*naive), 0.2) < 0.85
    # independent pairs: the plain paired bootstrap covers too
    iid = [
        paired_bootstrap(x := rng.normal(0, 1, 100), x + 0.2 + rng.normal(0, 0.5, 100), n_boot=1000, seed=i)["ci"]
        for i in range(600)
    ]
    assert NOMINAL[0] <= _covers(*zip(*iid), 0.2) <= NOMINAL[1]


def test_paired_bootstrap_agrees_with_the_paired_t_interval_where_pairing_matters() -> None:
    rng = np.random.default_rng(16)
    shared = rng.normal(0, 3, 4000)  # examples differ a lot in difficulty
    a = shared + rng.normal(0, 0.5, 4000)
    b = shared + 0.05 + rng.normal(0, 0.5, 4000)
    r = paired_bootstrap(a, b, n_boot=4000, seed=0)
    t = ttest_rel(b, a).confidence_interval(0.95)
    half = (t.high - t.low) / 2
    assert r["ci"] == pytest.approx([t.low, t.high], abs=0.06 * half)
    assert r["ci"][0] > 0  # paired: a clear improvement
    unpaired = 2 * Z * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert unpaired > 5 * (r["ci"][1] - r["ci"][0])  # ignoring the pairing would hide it


def test_cluster_resampling_matches_exact_enumeration() -> None:
    """On 3 groups the 27 equally likely resamples can be listed: the bootstrap's replicates of the mean come
    out with the exact probabilities."""
    values = np.array([0.0, 1.0, 4.0, 10.0])
    groups = ["a", "a", "b", "c"]  # group means 0.5, 4, 10
    members = {"a": [0, 1], "b": [2], "c": [3]}
    exact: dict[float, float] = {}
    for draw in itertools.product("abc", repeat=3):
        idx = [i for g in draw for i in members[g]]
        key = round(float(values[idx].mean()), 9)
        exact[key] = exact.get(key, 0.0) + 1 / 27
    reps = cluster_bootstrap_distribution(lambda w: (w * values).sum(1) / w.sum(1), 4, groups, 54_000, seed=0)
    keys, counts = np.unique(np.round(reps, 9), return_counts=True)
    assert set(keys.tolist()) == set(exact)
    for key, count in zip(keys.tolist(), counts):
        assert count / reps.size == pytest.approx(exact[key], abs=0.006)


def test_groups_none_and_singleton_groups_draw_the_same_resamples() -> None:
    x = np.random.default_rng(2).normal(size=120)
    entry = bootstrap_entry(x, n_boot=500, seed=3)
    assert bootstrap_entry(x, [f"id{i}" for i in range(120)], n_boot=500, seed=3) == entry
    assert entry["method"] == "bootstrap (expanded percentile, 500 resamples)"
    assert bootstrap_entry(x, n_boot=500, seed=4)["ci"] != entry["ci"]
    grouped = bootstrap_entry(x, [i // 4 for i in range(120)], n_boot=500, seed=3)
    assert grouped["method"] == "cluster bootstrap (expanded percentile, 500 resamples over 30 groups)"
    assert (grouped["n"], grouped["clusters"]) == (120, 30)


# ---------------------------------------------------------------- McNemar, clustered
def test_sign_flip_by_hand_and_equal_to_exact_mcnemar_without_groups() -> None:
    # d = 2, -1, 3: S = 4; of the 8 sign patterns, sums 6, 4, -4, -6 are as extreme
    assert sign_flip_pvalue([2, -1, 3, 0]) == pytest.approx(4 / 8)
    assert sign_flip_pvalue([0, 0]) == 1.0
    rng = np.random.default_rng(5)
    for n in (10, 60, 300):
        a, b = rng.random(n) < 0.6, rng.random(n) < 0.7
        assert mcnemar_clustered(a, b)["p_value"] == pytest.approx(mcnemar_exact(a, b)["p_value"], rel=1e-9)
    a = [False] * 10 + [True] * 5
    b = [True] * 15
    r = mcnemar_clustered(a, b, groups=list(range(15)))
    assert r["p_value"] == pytest.approx(2 * 0.5**10) and r["statistic"] == -10 and r["clusters"] == 15


def test_clustered_mcnemar_keeps_its_size_on_clustered_data() -> None:
    """A true null (the two systems are equally good) with a group-level preference that flips sign from group to
    group: exact McNemar, counting examples as independent, rejects far too often; the clustered test does not."""
    rng = np.random.default_rng(6)
    reject_exact = reject_clustered = 0
    trials = 1500
    for _ in range(trials):
        sizes = rng.integers(4, 16, size=40)
        groups = np.repeat(np.arange(40), sizes)
        base = np.repeat(rng.normal(0.5, 1.0, 40), sizes)
        tilt = np.repeat(rng.normal(0, 1.0, 40), sizes)  # symmetric: H0 holds
        a = rng.random(sizes.sum()) < 1 / (1 + np.exp(-(base + tilt)))
        b = rng.random(sizes.sum()) < 1 / (1 + np.exp(-(base - tilt)))
        reject_exact += mcnemar_exact(a, b)["p_value"] <= 0.05
        reject_clustered += mcnemar_clustered(a, b, groups)["p_value"] <= 0.05
    assert reject_exact / trials > 0.2
    assert 0.03 <= reject_clustered / trials <= 0.07


def test_paired_comparison_bundle() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random(300) < 0.6, rng.random(300) < 0.75
    flat = paired_comparison(a, b)
    assert flat["mcnemar_clustered"] is None and flat["clusters"] == 300
    assert flat["accuracy_difference"]["method"] == "paired bootstrap (expanded percentile, 2000 resamples)"
    grouped = paired_comparison(a, b, [i // 6 for i in range(300)])
    assert grouped["mcnemar_clustered"]["clusters"] == 50 and grouped["mde"]["clusters"] == 50
    assert grouped["accuracy_difference"]["method"].startswith("paired cluster bootstrap")
    assert grouped["accuracy_difference"]["diff"] == pytest.approx(b.mean() - a.mean())


# ---------------------------------------------------------------- Holm
def test_holm_by_hand() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, float("nan"), 0.01])  # NaN is not a test
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


# ---------------------------------------------------------------- minimum detectable difference
def test_mde_by_hand() -> None:
    # Connor's equation with n = 1000, discordance 0.1: sqrt(n) d = z_.975 sqrt(0.1) + z_.8 sqrt(0.1 - d^2)
    za, zb = norm.ppf(0.975), norm.ppf(0.8)
    d = min_detectable_difference(1000, 0.1)
    assert d == pytest.approx((za * math.sqrt(100) + zb * math.sqrt(0.1 * (1000 + zb**2 - za**2))) / (1000 + zb**2))
    assert math.sqrt(1000) * d == pytest.approx(za * math.sqrt(0.1) + zb * math.sqrt(0.1 - d * d))
    assert round(d, 4) == 0.0280
    # no discordance observed: the difference must bring its own discordant pairs (all one way)
    d0 = min_detectable_difference(1000, 0.0)
    assert math.sqrt(1000) * d0 == pytest.approx(za * math.sqrt(d0) + zb * math.sqrt(d0 - d0 * d0))
    # groups: fewer effective pairs and t quantiles make the detectable difference larger
    assert min_detectable_difference(1000, 0.1, deff=2.0, clusters=100) > min_detectable_difference(500, 0.1)
    assert math.isnan(min_detectable_difference(3, 0.5))


def test_exact_mcnemar_has_80_percent_power_at_the_mde() -> None:
    n, pi = 500, 0.2
    d = min_detectable_difference(n, pi)
    counts = np.random.default_rng(8).multinomial(n, [(pi + d) / 2, (pi - d) / 2, 1 - pi], size=20_000)
    b, c = counts[:, 0], counts[:, 1]
    p = np.minimum(1.0, 2 * binom.cdf(np.minimum(b, c), b + c, 0.5))  # exact McNemar, vectorized
    assert 0.76 <= np.mean(p <= 0.05) <= 0.84


def test_paired_mde_uses_the_observed_discordance_and_groups() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.random(400) < 0.7, rng.random(400) < 0.72
    m = paired_mde(a, b)
    assert m["mde"] == pytest.approx(min_detectable_difference(400, np.mean(a != b)))
    assert m["clusters"] == 400 and m["deff"] == 1.0
    grouped = paired_mde(np.repeat(a[:100], 4), np.repeat(b[:100], 4), np.repeat(np.arange(100), 4))
    assert grouped["deff"] > 3 and grouped["mde"] > m["mde"]
