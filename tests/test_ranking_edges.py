"""Ranking metrics at their edges: what mutation testing (scripts/mutation.sh) found unchecked.

The interval is the one asked for (its level and seed are used), ranks are integers, one scored round is still
a mean, the tie rule reaches NDCG's mean, inputs of the wrong shape are refused, an empty submission is empty, and
a malformed submission's error says what is wrong with it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlmtune.metrics.ranking import (
    ndcg,
    ndcg_metric,
    rank_of_gt,
    ranking_metrics,
    ranks_from_scores,
    ranks_from_submission,
)


def _gold_ranks(n: int, p: float, seed: int = 0) -> np.ndarray:
    """n gold ranks, a share p of them at rank 1, the rest at rank 7."""
    hit = np.random.default_rng(seed).permutation(n) < round(p * n)
    return np.where(hit, 1, 7)


def test_recall_interval_has_the_asked_level():
    """R@1 is a mean of 0/1 values: its 95% interval is about p +- 1.96 sd/sqrt(n), a 50% one +- 0.674."""
    n, p = 400, 0.3
    ranks = _gold_ranks(n, p)
    half = np.sqrt(p * (1 - p) / n)
    for alpha, z in ((0.05, 1.96), (0.5, 0.674)):
        lo, hi = ranking_metrics(ranks, ks=(1,), n_boot=4000, alpha=alpha)["r@1"]["ci"]
        assert lo == pytest.approx(p - z * half, abs=0.25 * z * half), (alpha, lo, hi)
        assert hi == pytest.approx(p + z * half, abs=0.25 * z * half), (alpha, lo, hi)
    # The default is 95%.
    assert (
        ranking_metrics(ranks, ks=(1,), n_boot=4000)["r@1"]["ci"]
        == ranking_metrics(ranks, ks=(1,), n_boot=4000, alpha=0.05)["r@1"]["ci"]
    )


def test_ndcg_interval_has_the_asked_level_and_seed():
    rng = np.random.default_rng(3)
    scores, rel = rng.normal(size=(300, 10)), rng.choice([0.0, 0.5, 1.0], size=(300, 10))
    per_round = ndcg(scores, rel)
    half = per_round.std() / np.sqrt(per_round.size)
    for alpha, z in ((0.05, 1.96), (0.5, 0.674)):
        lo, hi = ndcg_metric(scores, rel, n_boot=4000, alpha=alpha)["ndcg"]["ci"]
        assert (hi - lo) / 2 == pytest.approx(z * half, rel=0.25), (alpha, lo, hi)
    a = ndcg_metric(scores, rel, n_boot=500, seed=1)["ndcg"]["ci"]
    assert a == ndcg_metric(scores, rel, n_boot=500, seed=1)["ndcg"]["ci"]
    assert a != ndcg_metric(scores, rel, n_boot=500, seed=2)["ndcg"]["ci"]


def test_ranks_are_integers():
    scores = np.array([[0.5, 0.5, 0.1], [3.0, 1.0, 2.0]])
    for ties in ("pessimistic", "optimistic"):
        assert ranks_from_scores(scores, ties).dtype == np.int64
        assert rank_of_gt(scores, [0, 2], ties).dtype == np.int64


def test_ndcg_metric_follows_the_tie_rule_and_scores_a_single_round():
    scores = np.zeros((1, 4))  # a constant scorer: one tie group
    rel = np.array([[1.0, 0.0, 0.5, 0.0]])
    lo = ndcg_metric(scores, rel, "pessimistic", n_boot=50)
    hi = ndcg_metric(scores, rel, "optimistic", n_boot=50)
    assert lo["ndcg"]["n"] == hi["ndcg"]["n"] == 1  # one round with relevance: still scored
    assert lo["ndcg"]["value"] == pytest.approx(float(ndcg(scores, rel, "pessimistic")[0]))
    assert hi["ndcg"]["value"] == pytest.approx(1.0) and lo["ndcg"]["value"] < 0.5
    assert lo["ndcg_rounds_skipped"] == 0 and lo["ndcg_policy"] and lo["ties_policy"].startswith("pessimistic")
    assert hi["ties_policy"].startswith("optimistic")


def test_gold_ranks_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ranking_metrics(np.ones((2, 2)))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ranking_metrics([])
    with pytest.raises(ValueError, match=r"gt_ranks\[2\] = 0"):
        ranking_metrics([1, 2, 0, 3])
    with pytest.raises(ValueError, match=r"gt_ranks\[1\] = nan"):
        ranking_metrics([1, float("nan"), 3])


def test_empty_submission_is_empty_and_strings_are_not_ranks():
    keys, ranks = ranks_from_submission([], num_options=5)
    assert keys == [] and ranks.shape == (0, 5) and ranks.dtype == np.int64
    from vlmtune.errors import DataError

    with pytest.raises(DataError, match="must be a list of 5 ints"):
        ranks_from_submission([{"image_id": 1, "round_id": 1, "ranks": "12345"}], num_options=5)


def test_ndcg_interval_defaults_to_95_percent():
    rng = np.random.default_rng(5)
    scores, rel = rng.normal(size=(50, 6)), rng.choice([0.0, 1.0], size=(50, 6))
    assert (
        ndcg_metric(scores, rel, n_boot=300)["ndcg"]["ci"]
        == ndcg_metric(scores, rel, n_boot=300, alpha=0.05)["ndcg"]["ci"]
    )


@pytest.mark.parametrize(
    "ranks, detail",
    [
        ([1, 1, 2, 2, 3, 3, 4, 4], "(repeated: [1, 2, 3, 4])"),
        ([0, 1, 2, 3, 4, 5, 8, 9], "(outside 1..8: [0, 9])"),
        ([-5, -4, -3, -2, -1, 0, 7, 8], "(outside 1..8: [-5, -4, -3, -2, -1])"),
        ([1, 1, 2, 3, 4, 5, 6, 9], "(repeated: [1]; outside 1..8: [9])"),
    ],
)
def test_a_submission_that_is_not_a_permutation_says_what_is_wrong(ranks, detail):
    from vlmtune.errors import DataError

    with pytest.raises(DataError) as e:
        ranks_from_submission([{"image_id": 7, "round_id": 2, "ranks": ranks}], num_options=8)
    assert f"row 0 (image_id=7, round_id=2): ranks is not a permutation of 1..8 {detail}" in str(e.value)


def test_submission_duplicates_are_listed_five_at_most():
    from vlmtune.errors import DataError

    ranks = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    with pytest.raises(DataError, match=r"\(repeated: \[1, 2, 3, 4, 5\]\)"):
        ranks_from_submission([{"image_id": 1, "round_id": 1, "ranks": ranks}], num_options=12)


@pytest.mark.parametrize(
    "ranks, said",
    [
        ([1, 2, 3], "got 3 values"),
        (5, "got int"),
        ({"a": 1}, "got dict"),
        ([1, 2.0, 3, 4, 5], "ranks must be ints, found 2.0"),
        ([1, True, 3, 4, 5], "ranks must be ints, found True"),
    ],
)
def test_submission_ranks_of_the_wrong_kind_are_named(ranks, said):
    from vlmtune.errors import DataError

    with pytest.raises(DataError, match=re.escape(said)):
        ranks_from_submission([{"image_id": 1, "round_id": 1, "ranks": ranks}], num_options=5)
