"""VisDial ranking metrics against hand-computed values from the official definitions
(shared/seeds/README.md, "VisDial v1.0, for reference") and against a loop transcription of the
official NDCG code on tie-free scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlmtune.errors import DataError
from vlmtune.metrics.ranking import (
    gold_rank_from_ranks,
    ndcg,
    ndcg_metric,
    rank_of_gt,
    ranking_metrics,
    ranks_from_scores,
    ranks_from_submission,
    scores_from_ranks,
)

L3 = math.log2(3)  # discount of position 2: log2(2 + 1)


# ---------------------------------------------------------------- ranks and ties
def test_ranks_ties_hand_case() -> None:
    scores = [[3.0, 1.0, 3.0, 2.0]]  # options 0 and 2 tie for first place
    assert ranks_from_scores(scores).tolist() == [[2, 4, 2, 3]]  # tie -> worst rank of group
    assert ranks_from_scores(scores, ties="optimistic").tolist() == [[1, 4, 1, 3]]  # tie -> best rank of group
    assert rank_of_gt(scores, [0]).tolist() == [2]
    assert rank_of_gt(scores, [0], ties="optimistic").tolist() == [1]
    assert rank_of_gt(scores, [3]).tolist() == [3]


def test_rank_of_gt_agrees_with_full_ranks_under_heavy_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 12)).astype(float)  # many ties
    gt = rng.integers(0, 12, size=50)
    for ties in ("pessimistic", "optimistic"):
        full = ranks_from_scores(scores, ties)
        assert np.array_equal(gold_rank_from_ranks(full, gt), rank_of_gt(scores, gt, ties))
    # pessimistic never beats optimistic
    assert np.all(rank_of_gt(scores, gt) >= rank_of_gt(scores, gt, "optimistic"))


def test_constant_scorer_cannot_look_good() -> None:
    scores = np.zeros((6, 100))
    gt = np.arange(6)
    m = ranking_metrics(rank_of_gt(scores, gt), n_boot=50)
    assert m["r@1"]["value"] == 0 and m["r@5"]["value"] == 0 and m["r@10"]["value"] == 0
    assert m["mrr"]["value"] == pytest.approx(1 / 100)
    assert m["mean_rank"]["value"] == 100
    # the optimistic bracket shows what a stored-order tie-break could have claimed
    assert ranking_metrics(rank_of_gt(scores, gt, "optimistic"), n_boot=50)["r@1"]["value"] == 1


def test_perfect_and_reversed_scorer() -> None:
    rng = np.random.default_rng(1)
    rel = np.stack([rng.permutation(np.linspace(0, 1, 100)) for _ in range(4)])  # distinct relevance
    gt = rel.argmax(axis=1)
    perfect = ranking_metrics(rank_of_gt(rel, gt), n_boot=50)
    assert perfect["r@1"]["value"] == 1 and perfect["mrr"]["value"] == 1 and perfect["mean_rank"]["value"] == 1
    assert np.allclose(ndcg(rel, rel), 1.0)
    reversed_ = ranking_metrics(rank_of_gt(-rel, gt), n_boot=50)
    assert reversed_["r@10"]["value"] == 0 and reversed_["mean_rank"]["value"] == 100


def test_mrr_mean_rank_recall_by_hand() -> None:
    m = ranking_metrics([1, 2, 4, 10, 20], n_boot=200)
    assert m["r@1"]["value"] == pytest.approx(1 / 5)
    assert m["r@5"]["value"] == pytest.approx(3 / 5)  # ranks 1, 2, 4
    assert m["r@10"]["value"] == pytest.approx(4 / 5)  # ... and 10
    assert m["mrr"]["value"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 10 + 1 / 20) / 5)  # 0.38
    assert m["mean_rank"]["value"] == pytest.approx(37 / 5)
    for e in m.values():
        assert e["n"] == 5 and e["ci"][0] <= e["value"] <= e["ci"][1]
    assert set(m) == {"r@1", "r@5", "r@10", "mrr", "mean_rank"}


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_of_gt([[0.1, float("nan")]], [0])
    with pytest.raises(ValueError, match=r"gt_index\[0\] = 2"):
        rank_of_gt([[0.1, 0.2]], [2])
    with pytest.raises(ValueError, match="ties"):
        ranks_from_scores([[0.1, 0.2]], ties="average")
    with pytest.raises(ValueError, match="ranks start at 1"):
        ranking_metrics([1, 0])


# ---------------------------------------------------------------- NDCG
def test_ndcg_hand_case() -> None:
    rel = [[1.0, 0.5, 0.5, 0.0]]  # k = 3 relevant options
    scores = [[0.7, 0.1, 0.9, 0.4]]  # predicted order: 2, 0, 3, 1
    dcg = 0.5 / 1 + 1.0 / L3 + 0.0 / 2
    idcg = 1.0 / 1 + 0.5 / L3 + 0.5 / 2
    assert ndcg(scores, rel)[0] == pytest.approx(dcg / idcg)


def test_ndcg_k_varies_per_round() -> None:
    rel = [
        [1.0, 0.0, 0.0, 0.0],  # k = 1
        [1.0, 1.0, 1.0, 0.0],
    ]  # k = 3
    scores = [
        [0.8, 0.9, 0.1, 0.2],  # order 1, 0, ...: top-1 is irrelevant -> 0 (k = 2 would give 1/log2(3))
        [0.8, 0.5, 0.1, 0.9],
    ]  # order 3, 0, 1, 2
    got = ndcg(scores, rel)
    assert got[0] == pytest.approx(0.0)
    assert got[1] == pytest.approx((0 + 1 / L3 + 1 / 2) / (1 + 1 / L3 + 1 / 2))


def test_ndcg_all_zero_round_is_skipped_and_counted() -> None:
    rel = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    scores = [[0.9, 0.1, 0.2], [0.3, 0.2, 0.1], [0.9, 0.1, 0.2]]
    per = ndcg(scores, rel)
    assert per[0] == 1.0 and math.isnan(per[1]) and per[2] == 0.0
    m = ndcg_metric(scores, rel, n_boot=50)
    assert m["ndcg"]["value"] == pytest.approx(0.5) and m["ndcg"]["n"] == 2
    assert m["ndcg_rounds_skipped"] == 1
    none = ndcg_metric([[0.1, 0.2]], [[0.0, 0.0]], n_boot=50)
    assert none["ndcg"]["n"] == 0 and none["ndcg_rounds_skipped"] == 1 and math.isnan(none["ndcg"]["value"])


def test_ndcg_tie_rule_constant_scorer() -> None:
    rel = [[0.0, 0.0, 1.0, 0.0]]
    const = [[0.5, 0.5, 0.5, 0.5]]
    assert ndcg(const, rel)[0] == 0.0  # relevant option placed last in its tie group
    assert ndcg(const, rel, ties="optimistic")[0] == 1.0


def _official_ndcg(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Loop transcription of visdialch/metrics.py NDCG.observe (valid without ties in scores)."""
    out = []
    for s, r in zip(scores, rel):
        k = int(np.sum(r != 0))
        rankings = np.argsort(-s)[:k]
        best = np.argsort(-r, kind="stable")[:k]
        disc = np.log2(np.arange(k) + 2.0)
        out.append(np.sum(r[rankings] / disc) / np.sum(r[best] / disc))
    return np.array(out)


def test_ndcg_matches_official_code_without_ties() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(40, 100))
    rel = rng.choice([0.0, 0.0, 0.0, 0.5, 1.0], size=(40, 100))
    rel[:, 0] = 1.0  # every round has a relevant option
    assert np.allclose(ndcg(scores, rel), _official_ndcg(scores, rel))


# ---------------------------------------------------------------- submission format
def _row(image_id: int, round_id: int, ranks: list[int]) -> dict:
    return {"image_id": image_id, "round_id": round_id, "ranks": ranks}


def test_submission_roundtrip() -> None:
    rows = [_row(7, 1, [3, 1, 2, 4]), _row(7, 2, [1, 2, 3, 4])]
    keys, ranks = ranks_from_submission(rows, num_options=4)
    assert keys == [(7, 1), (7, 2)]
    assert ranks.tolist() == [[3, 1, 2, 4], [1, 2, 3, 4]]
    assert gold_rank_from_ranks(ranks, [0, 3]).tolist() == [3, 4]
    # a submission scores NDCG like the scores it was made from
    assert np.allclose(ranks_from_scores(scores_from_ranks(ranks)), ranks)
    rel = [[1.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]
    # round 1: k = 2, predicted top-2 = options 1 (rel 0) and 2 (rel 0.5)
    assert ndcg(scores_from_ranks(ranks), rel)[0] == pytest.approx((0 + 0.5 / L3) / (1.0 + 0.5 / L3))


@pytest.mark.parametrize(
    "ranks, needle",
    [
        ([1, 2, 2, 4], "not a permutation"),  # repeated rank
        ([0, 1, 2, 3], "not a permutation"),  # 0-based by mistake
        ([1, 2, 3], "list of 4 ints"),  # too short
        ([1, 2, 3, 4.0], "must be ints"),
    ],
)
def test_malformed_submission_names_image_and_round(ranks: list, needle: str) -> None:
    rows = [_row(7, 1, [1, 2, 3, 4]), _row(185565, 10, ranks)]
    with pytest.raises(DataError, match=needle) as err:
        ranks_from_submission(rows, num_options=4, source="submission.json")
    msg = str(err.value)
    assert "image_id=185565" in msg and "round_id=10" in msg and "submission.json" in msg


def test_submission_missing_field_and_duplicate_round() -> None:
    with pytest.raises(DataError, match="lacks ranks") as err:
        ranks_from_submission([{"image_id": 3, "round_id": 2}], num_options=4)
    assert "image_id=3" in str(err.value)
    with pytest.raises(DataError, match="repeats row 0"):
        ranks_from_submission([_row(3, 2, [1, 2, 3, 4]), _row(3, 2, [1, 2, 3, 4])], num_options=4)
