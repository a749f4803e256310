"""The retrieval score: relevance + recency (with a strength that grows on recall) + frequency + saliency.

    parts = components(items, now=120, dense=cosines, bm25=bm25_scores, settings=s)
    scores = combine(parts, superseded, s)
    order = rank(items, scores)          # ties broken deterministically

Per candidate item i, asked at turn `now`:
- relevance: `hybrid` x cosine(query, item) + (1 - hybrid) x BM25 / (the largest BM25 among the candidates);
  BM25 alone when there is no dense encoder (Generative Agents' relevance, made hybrid);
- recency: exp(-(now - last_i) / S_i), the Ebbinghaus retention of MemoryBank, where last_i is the turn of
  its last write or recall and the strength S_i starts at `decay` turns and grows by `decay` x `growth` at
  every recall (MemoryBank raises S on recall; Generative Agents refreshes on retrieval);
- frequency: log(1 + writes + recalls);
- saliency: in [0, 1]: novelty at write time (1 - the largest cosine to an earlier item), or a mark given
  with the write (an explicit "remember this", a teacher's importance rating).
Each part is min-max scaled over the candidates (a part equal for all gets 0), weighted and summed
(Generative Agents); an item that a later one superseded loses `superseded_penalty`. Ranking is by score,
then the more recent last write, then the item id, so equal scores always come out in the same order.
Forgetting is deterministic too (`vlmtune.memory.bank`), where MemoryBank's was random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vlmtune.errors import ConfigError
from vlmtune.memory.items import MemoryItem

PARTS = ("relevance", "recency", "frequency", "saliency")
DEFAULT_WEIGHTS = {"relevance": 1.0, "recency": 0.25, "frequency": 0.1, "saliency": 0.1}


@dataclass(frozen=True)
class ScoreSettings:
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    hybrid: float = 0.5  # share of the dense cosine in relevance (the rest is BM25)
    decay: float = 50.0  # initial strength S, in turns
    growth: float = 1.0  # S grows by decay x growth per recall
    superseded_penalty: float = 0.5

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(PARTS)
        if unknown:
            raise ConfigError(f"memory.weights has unknown part(s) {sorted(unknown)}; the parts are {', '.join(PARTS)}")
        if not 0.0 <= self.hybrid <= 1.0:
            raise ConfigError(f"memory.hybrid must be in [0, 1], got {self.hybrid}")
        if self.decay <= 0:
            raise ConfigError(f"memory.decay must be > 0 turns, got {self.decay}")

    def weight(self, part: str) -> float:
        return float(self.weights.get(part, 0.0))


# The single-signal methods the benchmark compares with the combined score.
def method_settings(method: str, combined: ScoreSettings) -> ScoreSettings:
    """Settings of a retrieval method: combined (as configured), relevance (dense cosine only; BM25 when
    there is no dense encoder), recency (exponential decay only)."""
    if method == "combined":
        return combined
    if method == "relevance":
        return replace(combined, weights={"relevance": 1.0}, hybrid=1.0, superseded_penalty=0.0)
    if method == "recency":
        return replace(combined, weights={"recency": 1.0}, superseded_penalty=0.0)
    raise ConfigError(f"unknown retrieval method '{method}'; choose combined, relevance or recency")


def recency(item: MemoryItem, now: int) -> float:
    last = max(item.last_access, item.turns[-1])
    return math.exp(-max(now - last, 0) / item.strength)


def components(
    items: Sequence[MemoryItem], now: int, *, dense: np.ndarray | None, bm25: np.ndarray | None, settings: ScoreSettings
) -> dict[str, np.ndarray]:
    """Raw parts per item (module docstring), plus "dense" and "bm25" as they entered relevance."""
    n = len(items)
    if dense is None:
        rel = np.zeros(n) if bm25 is None else _share_of_max(bm25)
    elif bm25 is None or settings.hybrid >= 1.0:
        rel = np.asarray(dense, dtype=np.float64)
    else:
        rel = settings.hybrid * np.asarray(dense, dtype=np.float64) + (1 - settings.hybrid) * _share_of_max(bm25)
    parts = {
        "relevance": rel,
        "recency": np.array([recency(it, now) for it in items]),
        "frequency": np.log1p([it.frequency for it in items]).astype(np.float64),
        "saliency": np.array([it.saliency for it in items], dtype=np.float64),
    }
    if dense is not None:
        parts["dense"] = np.asarray(dense, dtype=np.float64)
    if bm25 is not None:
        parts["bm25"] = np.asarray(bm25, dtype=np.float64)
    return parts


def _share_of_max(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    top = x.max() if x.size else 0.0
    return x / top if top > 0 else np.zeros_like(x)


def min_max(x: np.ndarray) -> np.ndarray:
    """x scaled to [0, 1] over the candidates; all zeros when every value is the same."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def combine(
    parts: dict[str, np.ndarray], superseded: Sequence[bool], settings: ScoreSettings
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(scores, scaled parts): the weighted sum of the min-max scaled parts, minus the superseded penalty."""
    scaled = {p: min_max(parts[p]) for p in PARTS}
    score = sum(settings.weight(p) * scaled[p] for p in PARTS)
    score = np.asarray(score, dtype=np.float64) - settings.superseded_penalty * np.asarray(superseded, dtype=np.float64)
    return score, scaled


def rank(items: Sequence[MemoryItem], scores: np.ndarray) -> list[int]:
    """Indices of `items`, best first: by score (rounded to 1e-12, so float noise never decides), then the
    more recent last write, then the item id."""
    return sorted(range(len(items)), key=lambda i: (-round(float(scores[i]), 12), -items[i].turns[-1], items[i].id))


def part_record(parts: dict[str, np.ndarray], scaled: dict[str, np.ndarray], i: int, score: float) -> dict[str, Any]:
    """One item's score parts, for predictions.jsonl: raw values, scaled values and the total."""
    rec: dict[str, Any] = {p: round(float(v[i]), 6) for p, v in parts.items()}
    rec["scaled"] = {p: round(float(scaled[p][i]), 6) for p in PARTS}
    rec["score"] = round(float(score), 6)
    return rec
