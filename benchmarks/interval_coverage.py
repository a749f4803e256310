"""Coverage of vlmtune's 95% intervals, measured by simulation against the methods they replace.

    PYTHONPATH=. python benchmarks/interval_coverage.py                 # CPU, about 2 minutes
    PYTHONPATH=. python benchmarks/interval_coverage.py --datasets 4000 # tighter figures (SE about 0.35 points)

For each scenario it draws --datasets seeded datasets with a known truth and prints, per method, the share of
datasets whose interval holds the truth (nominal: 95%) and the median width. Baselines, measured in the same run
on the same datasets: the percentile bootstrap over examples (what vlmtune used before), the plain percentile
interval, Wilson ignoring the groups, the survey convention deff = 1 at p = 0 or 1, and exact McNemar. The
last table is a test's size instead: how often a true null is rejected at 5% (nominal: 5%).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from vlmtune.stats import (
    clopper_pearson_ci,
    clusters_of,
    mcnemar_clustered,
    mcnemar_exact,
    mean_replicates,
    paired_bootstrap,
    percentile_ci,
    proportion_interval,
    wilson_ci,
)


def row(name: str, method: str, cis: list, truth: float) -> None:
    lo, hi = np.asarray(cis, dtype=float).T
    cover = np.mean((lo <= truth) & (truth <= hi))
    print(f"| {name} | {method} | {100 * cover:.1f}% | {np.median(hi - lo):.4f} |")


def groups_of(rng: np.random.Generator, n_groups: int, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = rng.integers(low, high + 1, size=n_groups)
    return sizes, np.repeat(np.arange(n_groups), sizes)


def proportions(rng: np.random.Generator, d: int, b: int) -> None:
    for p in (0.8, 0.97, 0.99):
        k = rng.binomial(300, p, size=d)
        name = f"independent, n = 300, p = {p}"
        row(name, "wilson", list(zip(*wilson_ci(k, 300))), p)
        row(name, "clopper-pearson", list(zip(*clopper_pearson_ci(k, 300))), p)
        boot = [
            percentile_ci(mean_replicates(np.r_[np.ones(kk), np.zeros(300 - kk)], None, b, i)) for i, kk in enumerate(k)
        ]
        row(name, "baseline: percentile bootstrap", boot, p)
    scenarios = [(40, 2, 14, 0.75, 0.3), (30, 10, 10, 0.95, 0.3), (30, 10, 10, 0.97, 0.5), (100, 10, 10, 0.995, 0.5)]
    for n_groups, low, high, p, icc in scenarios:
        name = f"{n_groups} groups of {low}-{high}, p = {p}, ICC {icc}"
        runs = []
        for _ in range(d):
            sizes, groups = groups_of(rng, n_groups, low, high)
            rate = rng.beta(p * (1 - icc) / icc, (1 - p) * (1 - icc) / icc, size=n_groups)
            runs.append((rng.random(sizes.sum()) < np.repeat(rate, sizes), groups))
        wilson = [proportion_interval(h, g) for h, g in runs]
        row(name, "wilson with design effect", [r.ci for r in wilson], p)
        row(
            name,
            "clopper-pearson with design effect",
            [proportion_interval(h, g, method="clopper-pearson").ci for h, g in runs],
            p,
        )
        convention = [wilson_ci(h.sum(), h.size) if h.all() or not h.any() else r.ci for (h, _), r in zip(runs, wilson)]
        row(name, "baseline: same, deff = 1 at p = 0 or 1", convention, p)
        row(name, "baseline: wilson ignoring groups", [proportion_interval(h).ci for h, _ in runs], p)


def means(rng: np.random.Generator, d: int, b: int) -> None:
    scenarios = [
        ("independent, n = 100, gamma(2)", 100, 1, 1, "iid"),
        ("15 groups of 2-14", 15, 2, 14, "normal"),
        ("40 groups of 2-14", 40, 2, 14, "normal"),
        ("100 groups of 2-14", 100, 2, 14, "normal"),
        ("30 groups of 1-19, skewed group effect", 30, 1, 19, "skewed"),
    ]
    for name, n_groups, low, high, kind in scenarios:
        expanded, plain, naive = [], [], []
        for i in range(d):
            sizes, groups = groups_of(rng, n_groups, low, high)
            if kind == "iid":
                x = rng.gamma(2.0, 0.5, sizes.sum())  # mean 1
            elif kind == "normal":
                x = 1.0 + np.repeat(rng.normal(0, 1, n_groups), sizes) + rng.exponential(1.0, sizes.sum()) - 1.0
            else:
                x = np.repeat(rng.exponential(1.0, n_groups), sizes) + rng.exponential(0.5, sizes.sum()) - 0.5
            cl = clusters_of(groups, x.size)
            reps = mean_replicates(x, cl, b, i)
            expanded.append(percentile_ci(reps, 0.05, cl.count))
            plain.append(percentile_ci(reps))
            if kind != "iid" and i < d // 4:
                naive.append(percentile_ci(mean_replicates(x, None, b, i)))
        method = "cluster bootstrap, expanded percentile" if kind != "iid" else "bootstrap, expanded percentile"
        row(name, method, expanded, 1.0)
        row(name, "baseline: plain percentile (same resamples)", plain, 1.0)
        if naive:
            row(name, f"baseline: bootstrap over examples ({len(naive)} datasets)", naive, 1.0)


def paired(rng: np.random.Generator, d: int, b: int) -> None:
    cluster, naive = [], []
    for i in range(d):
        sizes, groups = groups_of(rng, 40, 2, 14)
        shared = np.repeat(rng.normal(0, 1, 40), sizes)
        a = shared + rng.normal(0, 0.5, sizes.sum())
        bb = shared + 0.2 + np.repeat(rng.normal(0, 0.5, 40), sizes) + rng.normal(0, 0.5, sizes.sum())
        cluster.append(paired_bootstrap(a, bb, n_boot=b, seed=i, groups=groups)["ci"])
        if i < d // 4:
            naive.append(paired_bootstrap(a, bb, n_boot=b, seed=i)["ci"])
    row("paired, 40 groups of 2-14", "paired cluster bootstrap, expanded percentile", cluster, 0.2)
    row("paired, 40 groups of 2-14", f"baseline: paired bootstrap over examples ({len(naive)} datasets)", naive, 0.2)


def mcnemar_size(rng: np.random.Generator, d: int) -> None:
    exact = clustered = 0
    for _ in range(d):
        sizes, groups = groups_of(rng, 40, 4, 15)
        base = np.repeat(rng.normal(0.5, 1.0, 40), sizes)
        tilt = np.repeat(rng.normal(0, 1.0, 40), sizes)  # a group-level preference with random sign: H0 holds
        a = rng.random(sizes.sum()) < 1 / (1 + np.exp(-(base + tilt)))
        b = rng.random(sizes.sum()) < 1 / (1 + np.exp(-(base - tilt)))
        exact += mcnemar_exact(a, b)["p_value"] <= 0.05
        clustered += mcnemar_clustered(a, b, groups)["p_value"] <= 0.05
    print("| test (true null, 40 groups of 4-15) | rejected at 5% |\n|---|---|")
    print(f"| clustered McNemar (exact sign-flip) | {100 * clustered / d:.1f}% |")
    print(f"| baseline: exact McNemar | {100 * exact / d:.1f}% |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=1000, help="simulated datasets per scenario")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    se = 100 * math.sqrt(0.05 * 0.95 / args.datasets)
    print(
        f"{args.datasets} datasets per scenario (a coverage near 95% has a standard error of {se:.1f} points), "
        f"{args.resamples} resamples per bootstrap interval, seed {args.seed}\n"
    )
    print("| data | interval | coverage (nominal 95%) | median width |\n|---|---|---|---|")
    proportions(rng, args.datasets, args.resamples)
    means(rng, args.datasets, args.resamples)
    paired(rng, args.datasets, args.resamples)
    print()
    mcnemar_size(rng, args.datasets)


if __name__ == "__main__":
    main()
