"""The paired tests a report runs on two systems' answers to the same examples, and Holm over all of them.

    pt = pair_tests(rows_a, rows_b, groups, task, n_boot=2000, seed=0)
    pt["accuracy"]      # vlmtune.stats.paired_comparison: exact McNemar, clustered McNemar (when a group repeats),
                        # the paired (cluster) bootstrap of the accuracy difference, the minimum detectable difference
    pt["headline"]      # which McNemar the report relies on, and why
    pt["per_example"]   # a paired (cluster) bootstrap of each per-example value the task defines (count: abs_error)
    family = holm_family([...tests...])   # Holm-adjusted p-values beside the raw ones when there is more than one

Examples that share a `group` (the rounds of one dialogue) are one unit everywhere here: the bootstraps resample
groups, and when a group holds more than one example the headline test is the clustered McNemar, since exact
McNemar treats each discordant example as independent evidence and rejects too often on clustered data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmtune.report.fmt import jsonable
from vlmtune.stats import holm, paired_bootstrap, paired_comparison
from vlmtune.tasks.base import Row, Task, row_groups

ALPHA, POWER = 0.05, 0.8


def shared_groups(runs_rows: Sequence[Sequence[Row]], labels: Sequence[str], notes: list[str]) -> list[Any]:
    """The examples' groups (paired rows, same order in every run): the first run's; a note when another run's
    rows say otherwise (the groups are a property of the data, so they should agree)."""
    groups = row_groups(runs_rows[0])
    for rows, label in zip(runs_rows[1:], labels[1:]):
        if row_groups(rows) != groups:
            notes.append(
                f"{label}'s prediction rows give other groups than {labels[0]}'s; the tests use {labels[0]}'s groups."
            )
    return groups


def pair_tests(
    rows_a: Sequence[Row], rows_b: Sequence[Row], groups: Sequence[Any], task: Task | None, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Every paired test of B against A (rows paired by position): {"accuracy", "headline", "per_example"}."""
    correct_a = [bool(r["correct"]) for r in rows_a]
    correct_b = [bool(r["correct"]) for r in rows_b]
    acc = jsonable(paired_comparison(correct_a, correct_b, list(groups), n_boot=n_boot, seed=seed, alpha=ALPHA))
    return {
        "accuracy": acc,
        "headline": headline_test(acc),
        "per_example": per_example_tests(task, rows_a, rows_b, groups, n_boot, seed) if task else [],
    }


def headline_test(acc: dict[str, Any]) -> dict[str, Any]:
    """The McNemar test the report's conclusion rests on: the clustered one when a group repeats, else exact.
    {"key" ("mcnemar_clustered" | "mcnemar"), "method", "p_value", "why"}."""
    clustered = acc.get("mcnemar_clustered")
    if clustered is not None:
        return {
            "key": "mcnemar_clustered",
            "method": clustered["method"],
            "p_value": clustered["p_value"],
            "why": f"examples share groups ({acc['n']} examples in {acc['clusters']} groups), so the discordant "
            "examples of one group are not independent; exact McNemar counts each one as fresh evidence "
            "and is shown for reference only",
        }
    exact = acc["mcnemar"]
    return {
        "key": "mcnemar",
        "method": exact["method"],
        "p_value": exact["p_value"],
        "why": "every example is its own group, so the clustered test is the same test",
    }


def per_example_tests(
    task: Task, rows_a: Sequence[Row], rows_b: Sequence[Row], groups: Sequence[Any], n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """A paired (cluster) bootstrap of the mean of each per-example value the task defines (`Task.per_example`),
    over the examples where both runs have a value: [{"name", "n", "clusters", "baseline", "candidate", "diff",
    "ci", "p_value", "method", ...}]."""
    va, vb = task.per_example(list(rows_a)), task.per_example(list(rows_b))
    out = []
    for name in sorted(set(va) & set(vb)):
        keep = [i for i, (x, y) in enumerate(zip(va[name], vb[name])) if x is not None and y is not None]
        if len(keep) < 2:
            continue
        xa = np.array([va[name][i] for i in keep], dtype=float)
        xb = np.array([vb[name][i] for i in keep], dtype=float)
        res = paired_bootstrap(xa, xb, n_boot=n_boot, seed=seed, alpha=ALPHA, groups=[groups[i] for i in keep])
        out.append(jsonable({"name": name, "baseline": float(xa.mean()), "candidate": float(xb.mean()), **res}))
    return out


def family(pt: dict[str, Any], pair: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The tests one pair contributes to the multiple-testing family: the headline McNemar on accuracy, and the
    paired bootstrap of each per-example value. (The paired bootstrap of the accuracy difference asks the same
    question as McNemar, so it is an interval beside it, not a second test.)"""
    acc = pt["accuracy"]
    tests = [
        {
            "metric": "accuracy",
            "test": pt["headline"]["method"],
            "key": pt["headline"]["key"],
            "diff": acc["accuracy_difference"]["diff"],
            "ci": acc["accuracy_difference"]["ci"],
            "interval": acc["accuracy_difference"]["method"],
            "n": acc["n"],
            "clusters": acc["clusters"],
            "p_value": pt["headline"]["p_value"],
        }
    ]
    tests += [
        {
            "metric": p["name"],
            "test": p["method"],
            "key": "paired_bootstrap",
            "diff": p["diff"],
            "ci": p["ci"],
            "interval": p["method"],
            "n": p["n"],
            "clusters": p["clusters"],
            "p_value": p["p_value"],
        }
        for p in pt["per_example"]
    ]
    if pair is not None:
        for t in tests:
            t["pair"] = list(pair)
    return tests


def holm_family(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tests with "p_holm" (Holm-adjusted over all of them) when there are two or more; None otherwise."""
    adjusted = holm([np.nan if t["p_value"] is None else t["p_value"] for t in tests]) if len(tests) > 1 else None
    return [jsonable({**t, "p_holm": None if adjusted is None else adjusted[i]}) for i, t in enumerate(tests)]


def mde_sentence(acc: dict[str, Any], significant: bool) -> str:
    """The minimum detectable accuracy difference at 80% power, worded so a non-significant result is read as
    'too small to see with this test set' rather than 'no difference'."""
    mde = acc["mde"]
    where = f"n = {mde['n']}" + (f" in {mde['clusters']} groups" if mde["clusters"] != mde["n"] else "")
    rate = mde["discordant_rate"]
    if mde["mde"] is None:
        size = "no accuracy difference up to 1 can be detected with 80% power"
    else:
        size = (
            f"the smallest accuracy difference it detects with {POWER:.0%} power (two-sided, at the "
            f"{ALPHA:.0%} level) is **±{mde['mde']:.3f}**"
        )
    first = (
        f"Minimum detectable difference: with {where} and {rate:.1%} of the examples discordant, {size} "
        f"({mde['method']})."
    )
    if significant:
        return first
    return first + (
        " The test found no significant difference, which does not show the systems are equal: a "
        "true difference smaller than this would usually go undetected with this test set."
    )
