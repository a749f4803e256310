"""Task "caption": free text against a reference caption (base-model pretraining and sanity checks).

parse is the identity (stripped); it never fails. Metrics, each over all rows:
  - exact_match: the caption equals a reference after normalization (case, punctuation, spacing).
  - token_f1: SQuAD-style bag-of-words F1 between normalized whitespace tokens (1.0 when both are
    empty, 0.0 when only one is). With several references (a list target) the best one counts.
For real captioning scores use the text metrics (BLEU, ROUGE, BERTScore) in vlmtune.metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmtune.registry import TASKS
from vlmtune.stats import bootstrap_entry, proportion_entry
from vlmtune.tasks.base import Parsed, Row, Task, row_groups
from vlmtune.tasks.classify import normalize


def _predictions(rows: Sequence[Row]) -> list[str]:
    return [str(r.get("parsed") if r.get("parsed") is not None else r.get("prediction", "")) for r in rows]


def _token_f1s(rows: Sequence[Row]) -> np.ndarray:
    return np.array(
        [
            max((token_f1(p, ref) for ref in _references(r["target"])), default=0.0)
            for p, r in zip(_predictions(rows), rows)
        ],
        dtype=float,
    )


def _references(target: Any) -> list[str]:
    return [str(t) for t in target] if isinstance(target, (list, tuple)) else [str(target)]


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two texts after normalization."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, target: Any) -> bool:
    """True if the prediction equals any reference after normalization."""
    return any(normalize(prediction) == normalize(r) for r in _references(target))


@TASKS.register("caption", help="describe the image; scored by exact match and token F1 (sanity task)")
class CaptionTask(Task):
    """Captioning: target is a reference string (or a list of them); parse never fails."""

    name = "caption"

    def parse(self, text: str, example: Any = None) -> Parsed:
        return Parsed((text or "").strip(), True, text or "")

    def correct(self, value: Any, example: Any) -> bool:
        return value is not None and exact_match(str(value), example.target)

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        """Token F1 of each caption against its best reference."""
        return {"token_f1": [float(v) for v in _token_f1s(rows)]}

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Keys: exact_match (Wilson), token_f1 (bootstrap) (entries {"value", "ci", "n", "clusters", "method"}),
        parse_failures (int, always 0)."""
        em = np.array([exact_match(p, r["target"]) for p, r in zip(_predictions(rows), rows)], dtype=bool)
        groups = row_groups(rows)
        failures = sum(1 for r in rows if not r.get("parse_ok", True))
        return {
            "exact_match": proportion_entry(em, groups=groups),
            "token_f1": bootstrap_entry(_token_f1s(rows), groups, n_boot=n_boot, seed=seed),
            "parse_failures": failures,
        }
