"""Indexes a bank searches: BM25 over key texts, and dense inner-product search (exact numpy by default).

    bm25 = BM25(); bm25.add(0, "Leo's favourite colour is green."); bm25.scores("Leo's colour?", [0])
    dense = make_index("exact", dim=384); dense.add(0, vec); keys = dense.search(query_vec, 50)

BM25 is Okapi BM25 exactly as `rank_bm25.BM25Okapi` computes it (k1 1.5, b 0.75, negative idf floored at
epsilon x the mean idf; a test compares the two), kept incrementally because a memory grows one item at a
time and rank_bm25 rebuilds its statistics from the whole corpus on every change. Tokens are lower-cased
words with a plural "s" stripped, plus adjacent word pairs ("yellow_triangle"), so a colour and a kind
named together outweigh either alone.

Dense indexes only choose candidates (the top `n` by inner product); the bank scores candidates exactly
with numpy, so the exact index, faiss (`IndexFlatIP`) and usearch (exact search) give the same results
whenever they choose the same candidates, which they do unless two scores tie at the cut. faiss and usearch
(extra `memory-index`) pay off above about 10^5 items; below that numpy's one matrix product is as fast.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from vlmtune.errors import ConfigError
from vlmtune.memory.encoders import require

_WORD = re.compile(r"\w+")
INDEX_EXTRA = "memory-index"


def tokenize(text: str) -> list[str]:
    """Lower-cased words (a plural "s" stripped) and adjacent word pairs."""
    words = [
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in _WORD.findall(text.lower())
    ]
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


class BM25:
    """Incremental Okapi BM25 over documents added and removed by integer key."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.docs: dict[int, Counter] = {}
        self.lengths: dict[int, int] = {}
        self.postings: dict[str, dict[int, int]] = {}  # term -> {key: term frequency}
        self.total = 0
        self._idf_cache: dict[str, float] | None = None

    def add(self, key: int, text: str) -> None:
        if key in self.docs:
            self.remove(key)
        tf = Counter(tokenize(text))
        self.docs[key] = tf
        self.lengths[key] = sum(tf.values())
        self.total += self.lengths[key]
        for t, n in tf.items():
            self.postings.setdefault(t, {})[key] = n
        self._idf_cache = None

    def remove(self, key: int) -> None:
        tf = self.docs.pop(key)
        self.total -= self.lengths.pop(key)
        for t in tf:
            post = self.postings[t]
            del post[key]
            if not post:
                del self.postings[t]
        self._idf_cache = None

    def _idf(self) -> dict[str, float]:
        if self._idf_cache is None:
            n = len(self.docs)
            idf = {t: math.log(n - len(p) + 0.5) - math.log(len(p) + 0.5) for t, p in self.postings.items()}
            eps = self.epsilon * (sum(idf.values()) / len(idf)) if idf else 0.0
            self._idf_cache = {t: (eps if v < 0 else v) for t, v in idf.items()}
        return self._idf_cache

    def scores(self, query: str, keys: Sequence[int]) -> np.ndarray:
        """BM25 score of `query` against each document in `keys`."""
        out = np.zeros(len(keys), dtype=np.float64)
        if not self.docs:
            return out
        idf = self._idf()
        avgdl = self.total / len(self.docs)
        where = {k: i for i, k in enumerate(keys)}
        for q in tokenize(query):
            w = idf.get(q)
            if w is None:
                continue
            for key, tf in self.postings[q].items():
                i = where.get(key)
                if i is not None:
                    norm = self.k1 * (1 - self.b + self.b * self.lengths[key] / avgdl)
                    out[i] += w * tf * (self.k1 + 1) / (tf + norm)
        return out


class ExactIndex:
    """Exact inner-product search with numpy; ties go to the earlier key."""

    def __init__(self, dim: int):
        self.dim = dim
        self.keys: list[int] = []
        self.vecs = np.zeros((0, dim), np.float32)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: int, vec: np.ndarray) -> None:
        self.keys.append(key)
        self.vecs = np.vstack([self.vecs, np.asarray(vec, np.float32)[None]])

    def remove(self, key: int) -> None:
        i = self.keys.index(key)
        del self.keys[i]
        self.vecs = np.delete(self.vecs, i, axis=0)

    def search(self, query: np.ndarray, n: int) -> list[int]:
        if not self.keys:
            return []
        sims = self.vecs @ np.asarray(query, np.float32)
        order = np.lexsort((np.asarray(self.keys), -sims))
        return [self.keys[i] for i in order[:n]]


class FaissIndex(ExactIndex):
    """faiss IndexFlatIP behind an id map (exact); vectors are also kept for the bank's exact scoring."""

    def __init__(self, dim: int):
        super().__init__(dim)
        faiss = require("faiss", "memory.index=faiss", INDEX_EXTRA)
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def add(self, key: int, vec: np.ndarray) -> None:
        super().add(key, vec)
        self.index.add_with_ids(np.asarray(vec, np.float32)[None], np.array([key], dtype=np.int64))

    def remove(self, key: int) -> None:
        super().remove(key)
        self.index.remove_ids(np.array([key], dtype=np.int64))

    def search(self, query: np.ndarray, n: int) -> list[int]:
        if not self.keys:
            return []
        _, ids = self.index.search(np.asarray(query, np.float32)[None], min(n, len(self.keys)))
        return [int(i) for i in ids[0] if i >= 0]


class USearchIndex(ExactIndex):
    """usearch with exact (brute-force) search over inner products."""

    def __init__(self, dim: int):
        super().__init__(dim)
        mod = require("usearch.index", "memory.index=usearch", INDEX_EXTRA)
        self.index = mod.Index(ndim=dim, metric="ip", dtype="f32")

    def add(self, key: int, vec: np.ndarray) -> None:
        super().add(key, vec)
        self.index.add(key, np.asarray(vec, np.float32))

    def remove(self, key: int) -> None:
        super().remove(key)
        self.index.remove(key)

    def search(self, query: np.ndarray, n: int) -> list[int]:
        if not self.keys:
            return []
        found = self.index.search(np.asarray(query, np.float32), min(n, len(self.keys)), exact=True)
        return [int(k) for k in found.keys]


INDEXES = {"exact": ExactIndex, "faiss": FaissIndex, "usearch": USearchIndex}


def make_index(kind: str, dim: int) -> ExactIndex:
    if kind not in INDEXES:
        raise ConfigError(f"memory.index is '{kind}'; choose one of {', '.join(INDEXES)}")
    return INDEXES[kind](dim)
