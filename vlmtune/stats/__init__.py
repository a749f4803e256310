"""Uncertainty and significance for evaluation numbers, with examples that share a `group` kept together.

    proportion_entry(hits, groups=groups)                   # accuracy-like: Wilson (design-effect adjusted)
    bootstrap_entry(values, groups=groups, n_boot=2000)     # MAE, MRR, ROUGE ...: cluster bootstrap
    cluster_bootstrap_distribution(fn, n, groups)           # replicates of any statistic (F1, corpus BLEU)
    paired_comparison(correct_a, correct_b, groups)         # McNemar (exact + clustered), paired bootstrap, MDE
    holm(p_values)                                          # several tests at once

Every interval says how it was made: an entry is {"value", "ci", "n", "clusters", "method"}, with method
"wilson", "wilson with design effect (...)", "bootstrap (expanded percentile, 2000 resamples)" or "cluster
bootstrap (expanded percentile, 2000 resamples over 37 groups)". Modules: `proportions` (score intervals), `resample` (the
bootstrap over groups, the entry format), `paired` (comparisons of two systems, multiplicity, power).
Everything is deterministic given `seed`.
"""

from vlmtune.stats.paired import (
    holm,
    mcnemar_clustered,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap,
    paired_comparison,
    paired_mde,
    sign_flip_pvalue,
)
from vlmtune.stats.proportions import (
    ProportionCI,
    clopper_pearson_ci,
    effective_size,
    proportion_ci,
    proportion_entry,
    proportion_interval,
    wilson_ci,
)
from vlmtune.stats.resample import (
    Clusters,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_entry,
    bootstrap_method,
    bootstrap_metric,
    cluster_bootstrap_distribution,
    clusters_of,
    group_counts,
    mean_replicates,
    metric_entry,
    nan_entry,
    percentile_ci,
)

__all__ = [
    "Clusters",
    "ProportionCI",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_entry",
    "bootstrap_method",
    "bootstrap_metric",
    "clopper_pearson_ci",
    "cluster_bootstrap_distribution",
    "clusters_of",
    "effective_size",
    "group_counts",
    "holm",
    "mcnemar_clustered",
    "mcnemar_exact",
    "mean_replicates",
    "metric_entry",
    "min_detectable_difference",
    "nan_entry",
    "paired_bootstrap",
    "paired_comparison",
    "paired_mde",
    "percentile_ci",
    "proportion_ci",
    "proportion_entry",
    "proportion_interval",
    "sign_flip_pvalue",
    "wilson_ci",
]
