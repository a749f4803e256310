"""CIDEr-D (Vedantam et al.), as the reference implementation computes it, with a bootstrap CI.

cider(preds, refs)            # {"cider": entry, "cider_note": ...}; per example: cider_scores(preds, refs)
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmtune.metrics.text import Groups, _check_pairs, _mean_entry
from vlmtune.registry import METRICS

CIDER_NOTE = (
    "CIDEr-D as in the reference implementation (vrama91/cider, coco-caption): n = 1..4, TF-IDF with "
    "document frequency over this evaluation's references, clipped numerator, gaussian length "
    "penalty sigma = 6, x10. Text is lowercased and punctuation removed instead of the Java PTB "
    "tokenizer, so numbers are close to coco-caption's, not identical. CI: document frequencies fixed, "
    "per-example scores resampled."
)


def _cider_tokens(text: str) -> list[str]:
    """Lowercase, punctuation (Unicode category P*) to spaces, split on whitespace."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return text.split()


def _ngram_counts(words: list[str], n: int) -> Counter:
    """Counts of every 1..n-gram (tuples of words)."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def cider_scores(preds: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> np.ndarray:
    """Per-example CIDEr-D [n_examples], faithful to Vedantam et al.'s reference code (ciderD_scorer.py).

    This is the one metric vlmtune implements itself rather than wrapping: the reference implementation
    ships only inside coco-caption / pycocoevalcap, whose tokenizer needs Java. Its formula:

      g = TF-IDF vector of a sentence's n-grams, one per order n: g_k = tf_k * (log N - log max(1, df_k)),
          tf = raw count, N = number of examples, df_k = number of examples whose references contain k.
      sim_n(c, r) = sum_k min(g_c,k, g_r,k) * g_r,k / (|g_c| |g_r|)      (clipped; 0 if a norm is 0)
                    * exp(-(len_c - len_r)^2 / (2 sigma^2))                (length penalty)
      CIDEr-D(c, R) = 10 * mean_n( mean_{r in R} sim_n(c, r) )

    As in the reference code, "length" is the number of bigrams (words - 1); the difference of two
    lengths is the same as in words unless a sentence is empty, where the similarity is 0 anyway.
    With a single example log N = 0, every weight is 0 and the score is 0, as with coco-caption:
    CIDEr needs a corpus.
    """
    p, r = _check_pairs(preds, refs)
    cand = [_ngram_counts(_cider_tokens(x), n) for x in p]
    ref_counts = [[_ngram_counts(_cider_tokens(x), n) for x in rs] for rs in r]

    df: Counter = Counter()  # document frequency: an n-gram counts once per example, over its references
    for rs in ref_counts:
        df.update({g for c in rs for g in c})
    log_n = math.log(float(len(r)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        """TF-IDF vector per order, its norm per order, and the length (bigram count)."""
        v: list[dict] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            order = len(g) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df[g])))
            v[order][g] = w
            norm[order] += w * w
            if order == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    def sim(vc, nc, lc, vr, nr, lr) -> np.ndarray:
        penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma**2))
        val = np.zeros(n)
        for k in range(n):
            for g, w in vc[k].items():
                val[k] += min(w, vr[k][g]) * vr[k][g]  # clipping: repeats earn no more than the reference has
            if nc[k] != 0 and nr[k] != 0:
                val[k] /= nc[k] * nr[k]
            val[k] *= penalty
        return val

    scores = np.empty(len(p))
    for i, (c, rs) in enumerate(zip(cand, ref_counts)):
        vc, nc, lc = vec(c)
        total = np.zeros(n)
        for rc in rs:
            total += sim(vc, nc, lc, *vec(rc))
        scores[i] = 10.0 * float(np.mean(total)) / len(rs)
    return scores


@METRICS.register("cider", help="CIDEr-D (implemented here; see its docstring) with a bootstrap CI")
def cider(
    preds: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Groups = None,
) -> dict[str, Any]:
    """Mean CIDEr-D with a bootstrap CI: {"cider": entry, "cider_note": how it was computed}."""
    return {"cider": _mean_entry(cider_scores(preds, refs), groups, n_boot, seed, alpha), "cider_note": CIDER_NOTE}


# ----------------------------------------------------------------------------- BERTScore (optional extra)
