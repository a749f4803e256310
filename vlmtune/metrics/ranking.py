"""VisDial-style ranking metrics: R@k, MRR, mean rank and NDCG over answer options, each with its interval.

    ranks = ranks_from_scores(scores)                  # [R, K] -> [R, K], 1 = best
    gt = rank_of_gt(scores, gt_index)                  # [R] rank of the gold option
    ranking_metrics(gt)                                # {"r@1", "r@5", "r@10", "mrr", "mean_rank"}
    ndcg_metric(scores, relevance)                     # {"ndcg", "ndcg_rounds_skipped", "ndcg_policy"}
    keys, ranks = ranks_from_submission(rows)          # VisDial's official submission format

Definitions follow the VisDial v1.0 evaluation (shared/seeds/README.md): options are ranked by model
score, R@k = mean(rank of gold <= k), MRR = mean(1 / rank), mean rank = mean(rank), over every round.
R@k is a proportion (Wilson interval, design-effect adjusted when rounds share a dialogue); MRR, mean rank and
NDCG get bootstrap intervals that resample whole groups (the rounds of one dialogue together).

Tie rule (TIES_POLICY). The official code ranks with torch.sort, so a tie is broken by whatever order
the options happen to be stored in: the same scores can give different numbers. Here ties are broken
deterministically and, by default, against the model ("pessimistic"): an option tied with others
takes the worst rank of its tie group, so a constant scorer puts the gold answer at rank K and scores
R@1 = 0, not 1. "optimistic" gives the best rank of the group instead; the two bracket every possible
tie-breaking, so reporting both shows how much ties matter. (Average ranks are not offered: R@k and MRR
of an averaged rank are not the expected R@k and MRR under random tie-breaking, so they would look
principled without being so.) For NDCG the same rule orders a tie group by relevance: least relevant
first when pessimistic, most relevant first when optimistic.

All-zero relevance rule (NDCG_POLICY). NDCG's k is the number of options with non-zero relevance; a
round where every option has relevance 0 has k = 0 and IDCG = 0, where the official code divides by
zero. Such a round has no NDCG: `ndcg` marks it NaN in the per-round array, and `ndcg_metric` leaves it
out of the mean and reports how many were left out, so the mean is never NaN and never pulled to 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
from scipy.stats import rankdata

from vlmtune.errors import DataError
from vlmtune.stats import bootstrap_entry, proportion_entry

TIES = ("pessimistic", "optimistic")
TIES_POLICY = (
    "options tied in score take the worst rank of their tie group (pessimistic, default) "
    "or the best (optimistic); for NDCG a tie group is ordered least relevant first "
    "(pessimistic) or most relevant first (optimistic)"
)
NDCG_POLICY = (
    "rounds whose relevance is all zero have no NDCG (k = 0, IDCG = 0): they are left out of "
    "the mean and counted in ndcg_rounds_skipped"
)


# ----------------------------------------------------------------------------- validation
def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D [rounds, options] with at least one option, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
        raise ValueError(f"{name} has NaN or inf values (first rows: {rows}); a model score must be finite")
    return arr


def _as_gt_index(gt_index: Any, n_rounds: int, n_options: int) -> np.ndarray:
    gt = np.asarray(gt_index)
    if gt.shape != (n_rounds,):
        raise ValueError(f"gt_index must have shape ({n_rounds},) (one per round), got {gt.shape}")
    if gt.size and not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"gt_index must hold integers (0-based option indices), got dtype {gt.dtype}")
    bad = (gt < 0) | (gt >= n_options)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"gt_index[{i}] = {int(gt[i])} is outside 0..{n_options - 1} "
            f"(gt_index is 0-based, as in VisDial's dialog files)"
        )
    return gt.astype(np.int64)


# ----------------------------------------------------------------------------- ranks
def ranks_from_scores(scores: Any, ties: str = "pessimistic") -> np.ndarray:
    """Rank of every option by model score, descending: [R, K] scores -> [R, K] int ranks (1 = best).

    Tied options share the worst rank of their group ("pessimistic") or the best ("optimistic"), so
    with ties the ranks of a round are not a permutation of 1..K (see the module docstring).
    """
    _check_ties(ties)
    s = _as_scores(scores)  # [R, K]
    # rankdata ranks ascending; negate for "higher score = better rank".
    # method="max" gives every member of a tie group the group's largest rank, "min" its smallest.
    method = "max" if ties == "pessimistic" else "min"
    return rankdata(-s, method=method, axis=1).astype(np.int64)


def rank_of_gt(scores: Any, gt_index: Any, ties: str = "pessimistic") -> np.ndarray:
    """Rank of the gold option in each round: scores [R, K], gt_index [R] (0-based) -> [R] int ranks.

    pessimistic: rank = number of options scoring >= the gold (the gold itself included);
    optimistic:  rank = 1 + number of options scoring strictly more than the gold.
    """
    _check_ties(ties)
    s = _as_scores(scores)  # [R, K]
    gt = _as_gt_index(gt_index, *s.shape)  # [R]
    gold = s[np.arange(s.shape[0]), gt][:, None]  # [R, 1]
    if ties == "pessimistic":
        return np.sum(s >= gold, axis=1).astype(np.int64)
    return (1 + np.sum(s > gold, axis=1)).astype(np.int64)


def gold_rank_from_ranks(ranks: Any, gt_index: Any) -> np.ndarray:
    """Rank of the gold option: ranks [R, K] (ranks[r, i] = rank of option i), gt_index [R] (0-based) -> [R]."""
    rk = np.asarray(ranks)
    if rk.ndim != 2:
        raise ValueError(f"ranks must be 2-D [rounds, options], got shape {rk.shape}")
    gt = _as_gt_index(gt_index, *rk.shape)
    return rk[np.arange(rk.shape[0]), gt]


def scores_from_ranks(ranks: Any) -> np.ndarray:
    """Scores that reproduce the given ranks (rank 1 scores highest), so `ndcg` can score a submission."""
    return -np.asarray(ranks, dtype=float)


# ----------------------------------------------------------------------------- submission format
def ranks_from_submission(
    rows: Iterable[Mapping[str, Any]], num_options: int = 100, source: str | None = None
) -> tuple[list[tuple[Any, int]], np.ndarray]:
    """Parse VisDial's official submission format into (keys, ranks).

    rows: [{"image_id": int, "round_id": int (1-based), "ranks": [K ints]}], where ranks[i] is the rank
    of option i; every ranks list must be a permutation of 1..K. Returns keys [(image_id, round_id)] in
    row order and ranks [R, K] int64. A malformed row raises DataError naming its image_id and round_id;
    `source` (a file name) is put in front of the message.
    """
    keys: list[tuple[Any, int]] = []
    out: list[np.ndarray] = []
    seen: dict[tuple[Any, int], int] = {}
    expected = np.arange(1, num_options + 1)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(
                f"row {i} is {type(row).__name__}, expected an object with image_id, round_id, ranks", file=source
            )
        missing = [k for k in ("image_id", "round_id", "ranks") if k not in row]
        where = f"row {i} (image_id={row.get('image_id')!r}, round_id={row.get('round_id')!r})"
        if missing:
            raise DataError(
                f"{where} lacks {', '.join(missing)}",
                file=source,
                field=missing[0],
                fix='each row must be {"image_id": int, "round_id": int, "ranks": [K ints]}',
            )
        key = (row["image_id"], row["round_id"])
        ranks = row["ranks"]
        if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Sequence) or len(ranks) != num_options:
            got = f"{len(ranks)} values" if isinstance(ranks, Sequence) else type(ranks).__name__
            raise DataError(
                f"{where}: ranks must be a list of {num_options} ints, got {got}",
                file=source,
                field="ranks",
                fix=f"give the rank (1..{num_options}) of every answer option",
            )
        if not all(isinstance(r, Integral) and not isinstance(r, bool) for r in ranks):
            bad = next(r for r in ranks if not (isinstance(r, Integral) and not isinstance(r, bool)))
            raise DataError(
                f"{where}: ranks must be ints, found {bad!r}",
                file=source,
                field="ranks",
                fix=f"give integer ranks 1..{num_options}",
            )
        arr = np.asarray(ranks, dtype=np.int64)
        if not np.array_equal(np.sort(arr), expected):
            vals, counts = np.unique(arr, return_counts=True)
            dup = vals[counts > 1][:5].tolist()
            out_of_range = vals[(vals < 1) | (vals > num_options)][:5].tolist()
            detail = []
            if dup:
                detail.append(f"repeated: {dup}")
            if out_of_range:
                detail.append(f"outside 1..{num_options}: {out_of_range}")
            raise DataError(
                f"{where}: ranks is not a permutation of 1..{num_options} ({'; '.join(detail)})",
                file=source,
                field="ranks",
                fix=f"every option needs a distinct rank 1..{num_options}; break ties before writing",
            )
        if key in seen:
            raise DataError(
                f"{where} repeats row {seen[key]} (same image_id and round_id)",
                file=source,
                field="round_id",
                fix="keep one row per (image_id, round_id)",
            )
        seen[key] = i
        keys.append(key)
        out.append(arr)
    ranks_arr = np.stack(out) if out else np.zeros((0, num_options), dtype=np.int64)  # [R, K]
    return keys, ranks_arr


# ----------------------------------------------------------------------------- R@k, MRR, mean rank
def ranking_metrics(
    gt_ranks: Any,
    ks: Sequence[int] = (1, 5, 10),
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Metrics dict from the gold option's rank in each round (1 = best): r@k for each k, mrr, mean_rank.

    Each is an entry {"value", "ci", "n", "clusters", "method"}; `groups[i]` is round i's group (its dialogue;
    None: every round alone). The bootstrap CIs use one seed, so they resample the same groups.
    """
    r = np.asarray(gt_ranks, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"gt_ranks must be a non-empty 1-D array of ranks, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or np.any(r < 1):
        i = int(np.argmax(~np.isfinite(r) | (r < 1)))
        raise ValueError(f"gt_ranks[{i}] = {r[i]}: ranks start at 1 (1 = best)")

    boot: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "alpha": alpha}
    out = {f"r@{k}": proportion_entry(r <= k, groups=groups, alpha=alpha) for k in ks}
    out["mrr"] = bootstrap_entry(1.0 / r, groups, **boot)
    out["mean_rank"] = bootstrap_entry(r, groups, **boot)
    return out


# ----------------------------------------------------------------------------- NDCG
def ndcg(scores: Any, relevance: Any, ties: str = "pessimistic") -> np.ndarray:
    """Per-round NDCG as VisDial defines it: scores [R, K], relevance [R, K] -> [R] (NaN: no relevant option).

    k = number of options with non-zero relevance in that round. DCG = sum over the k options with the
    highest predicted score of rel / log2(pos + 1), positions from 1 (linear gain). IDCG is the same over
    the options sorted by relevance. NDCG = DCG / IDCG. A round with all-zero relevance has k = 0 and
    is NaN here; `ndcg_metric` leaves those rounds out and counts them.
    """
    _check_ties(ties)
    s = _as_scores(scores)  # [R, K]
    rel = _as_scores(relevance, "relevance")  # [R, K]
    if rel.shape != s.shape:
        raise ValueError(f"relevance shape {rel.shape} differs from scores shape {s.shape}")
    if np.any(rel < 0):
        i = int(np.argmax(np.any(rel < 0, axis=1)))
        raise ValueError(f"relevance row {i} has negative values; VisDial relevance is in [0, 1]")
    n_rounds, n_options = s.shape
    k = np.sum(rel != 0, axis=1)  # [R] number of relevant options
    # Order options by score descending; within a tie group, by relevance ascending (pessimistic) or
    # descending (optimistic). np.lexsort sorts by its last key first.
    secondary = rel if ties == "pessimistic" else -rel
    order = np.lexsort((secondary, -s), axis=1)  # [R, K] option indices, best first
    ranked_rel = np.take_along_axis(rel, order, axis=1)  # [R, K] relevance in predicted order
    ideal_rel = -np.sort(-rel, axis=1)  # [R, K] relevance in ideal order
    discount = 1.0 / np.log2(np.arange(1, n_options + 1) + 1.0)  # [K] 1 / log2(pos + 1), pos from 1
    in_top_k = np.arange(n_options)[None, :] < k[:, None]  # [R, K]
    dcg = np.sum(ranked_rel * discount * in_top_k, axis=1)  # [R]
    idcg = np.sum(ideal_rel * discount * in_top_k, axis=1)  # [R]
    out = np.full(n_rounds, np.nan)
    has_rel = k > 0  # idcg > 0 exactly when k > 0 (rel >= 0)
    out[has_rel] = dcg[has_rel] / idcg[has_rel]
    return out


def ndcg_metric(
    scores: Any,
    relevance: Any,
    ties: str = "pessimistic",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Metrics dict: "ndcg" entry {"value", "ci", "n", "clusters", "method"} (n = rounds scored; bootstrap over
    the rounds' `groups`), "ndcg_rounds_skipped" (rounds with all-zero relevance, left out of the mean),
    "ndcg_policy" and "ties_policy" (strings)."""
    per_round = ndcg(scores, relevance, ties)
    keep = ~np.isnan(per_round)
    kept_groups = None if groups is None else [g for g, k in zip(groups, keep) if k]
    entry = bootstrap_entry(per_round[keep], kept_groups, n_boot=n_boot, seed=seed, alpha=alpha)
    return {
        "ndcg": entry,
        "ndcg_rounds_skipped": int((~keep).sum()),
        "ndcg_policy": NDCG_POLICY,
        "ties_policy": f"{ties}: {TIES_POLICY}",
    }
