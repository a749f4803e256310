"""The memory bank: write turns, retrieve by the combined score, stay within a capacity.

    bank = MemoryBank(kit, BankSettings())
    bank.write(Write(turn=12, text="Here is photo #417, Mina's drawing.", kind="show", image="t012.png",
                     slot="photo #417"))
    ranked = bank.retrieve("What colour was the triangle in photo #417?", now=40)   # [Scored], best first
    bank.touch([s.item.id for s in ranked[:5]], now=40)                             # recall: refresh, strengthen

Writing the same content again (the same text, or the same picture under the same slot) reinforces the
existing item (one more write turn: its frequency) instead of adding a copy (MemoryBank's reinforcement).
A write with the slot of a live item supersedes it (the newer version wins; the old one is kept, marked,
and down-weighted). Saliency defaults to novelty: 1 - the largest cosine to an earlier item in the same space.

At capacity (`capacity` > 0 live items), superseded items go first (oldest first); then either the item with
the lowest retention exp(-(now - last)/S) is evicted (`policy: evict`; ties: the older, then the lower id),
or the two adjacent items (in turn order) whose vectors are most alike are merged into one (`policy: merge`,
MA-LMM's memory bank compression): texts and keys joined, turns and counts pooled, vectors averaged.
Both are deterministic. A `BankStore` (vlmtune.memory.store) makes every change durable as it happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmtune.errors import ConfigError
from vlmtune.memory.cache import rounded
from vlmtune.memory.encoders import normalize
from vlmtune.memory.index import BM25, ExactIndex, make_index, tokenize
from vlmtune.memory.items import KINDS, TURN_KINDS, MemoryItem, content_hash, file_hash
from vlmtune.memory.scoring import ScoreSettings, combine, components, part_record, rank, recency
from vlmtune.memory.toolkit import Toolkit

POLICIES = ("merge", "evict")


@dataclass
class Write:
    """What one turn writes. `kind`: an item kind or an episode turn kind (show, again, chat, ...)."""

    turn: int
    text: str
    kind: str = "turn"
    image: str | None = None
    slot: str | None = None
    saliency: float | None = None  # an explicit mark or a teacher's rating; None: novelty
    meta: dict[str, Any] = field(default_factory=dict)


class _Parts:
    """An item's score parts, turned into a dict only when read (most candidates are never shown)."""

    def __init__(self, parts: dict[str, np.ndarray], scaled: dict[str, np.ndarray], i: int, score: float):
        self.args = (parts, scaled, i, score)

    def get(self) -> dict[str, Any]:
        return part_record(*self.args)


@dataclass
class Scored:
    item: MemoryItem
    score: float
    _parts: Any = None  # a dict, or a _Parts read on first use

    @property
    def parts(self) -> dict[str, Any]:
        if isinstance(self._parts, _Parts):
            self._parts = self._parts.get()
        return self._parts or {}


@dataclass(frozen=True)
class BankSettings:
    score: ScoreSettings = field(default_factory=ScoreSettings)
    capacity: int = 0  # live items kept (0: no limit)
    policy: str = "merge"  # at capacity: merge (MA-LMM) | evict
    index: str = "exact"  # exact | faiss | usearch
    candidates: int = 1024  # items scored exactly per query (every item while the bank is smaller)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"memory.policy is '{self.policy}'; choose one of {', '.join(POLICIES)}")
        if self.capacity < 0 or self.candidates < 1:
            raise ConfigError("memory.capacity must be >= 0 and memory.candidates >= 1")


class MemoryBank:
    def __init__(self, kit: Toolkit, settings: BankSettings | None = None, store: Any = None):
        self.kit = kit
        self.settings = settings or BankSettings()
        self.items: dict[str, MemoryItem] = {}
        self.vec_text: dict[str, np.ndarray] = {}
        self.vec_image: dict[str, np.ndarray] = {}
        self.keys: dict[str, int] = {}
        self._next_key = 0
        self._repeats: dict[tuple[str | None, str | None], str] = {}  # (image hash, slot) or (None, text) -> id
        self._slots: dict[str, str] = {}  # slot -> its live, current item
        self._tokens: dict[str, set[str]] = {}  # id -> its key's tokens (no-encoder paths)
        self.bm25 = BM25()
        self.text_index = make_index(self.settings.index, kit.text.dim) if kit.text else None
        self.store = store  # a vlmtune.memory.store.BankStore, or None: in memory only

    def _index(self) -> ExactIndex:
        """The dense text index, which exists whenever text vectors do (a text encoder is configured)."""
        assert self.text_index is not None, "text vectors without a text encoder"
        return self.text_index

    # --- writing -------------------------------------------------------------------------------------------
    def write(self, w: Write) -> MemoryItem:
        kind = TURN_KINDS.get(w.kind, w.kind)
        if kind not in KINDS:
            raise ConfigError(
                f"memory item kind '{w.kind}' is unknown; use one of {', '.join(KINDS)} "
                f"(or an episode turn kind: {', '.join(TURN_KINDS)})"
            )
        image_hash = file_hash(w.image) if w.image else None
        same = self._same(w, image_hash)
        if same is not None:
            same.turns.append(w.turn)
            same.last_access = max(same.last_access, w.turn)
            self._log("put", item=same)
            return same
        content = content_hash(w.text, image_hash)
        item = MemoryItem(
            id=f"m{w.turn:06d}-{content[:8]}",
            kind=kind,
            text=w.text,
            turn=w.turn,
            turns=[w.turn],
            content=content,
            image=w.image,
            image_hash=image_hash,
            slot=w.slot,
            last_access=w.turn,
            strength=self.settings.score.decay,
            meta=dict(w.meta),
        )
        if w.image and image_hash is not None:
            item.key = self.kit.key_texts([w.image], [image_hash])[0]
        vt = self.kit.text_vectors([item.key_text()])
        vi = self.kit.image_vectors([w.image], [image_hash]) if w.image and image_hash is not None else None
        vt, vi = (None if vt is None else vt[0]), (None if vi is None else vi[0])
        item.saliency = float(w.saliency) if w.saliency is not None else self._novelty(item, vt, vi)
        other = self.items.get(self._slots.get(w.slot, "")) if w.slot else None
        if other is not None and other.superseded_by is None:
            other.superseded_by = item.id
            self._log("supersede", id=other.id, by=item.id)
        self._add(item, vt, vi)
        self._log("put", item=item)
        if self.store is not None:
            self.store.save_vectors(item, vt, vi)
        self._enforce_capacity(w.turn)
        return item

    def _same(self, w: Write, image_hash: str | None) -> MemoryItem | None:
        """The live item this write repeats: the same picture under the same slot, or the same text."""
        it = self.items.get(self._repeats.get((image_hash, w.slot) if image_hash else (None, w.text), ""))
        return it if it is not None and it.superseded_by is None and not it.merged else None

    def _novelty(self, item: MemoryItem, vt: np.ndarray | None, vi: np.ndarray | None) -> float:
        if vi is not None and self.vec_image:
            return float(np.clip(1.0 - float(np.max(np.stack(list(self.vec_image.values())) @ vi)), 0.0, 1.0))
        if vt is not None and self.vec_text:
            return float(np.clip(1.0 - float(np.max(self._index().vecs @ vt)), 0.0, 1.0))
        if vt is None and self.items:  # no dense encoder: word overlap (Jaccard)
            mine = set(tokenize(item.key_text()))
            return float(1.0 - max(_jaccard(mine, self._tokens[o]) for o in self.items))
        return 1.0

    def _add(self, item: MemoryItem, vt: np.ndarray | None, vi: np.ndarray | None) -> None:
        self.items[item.id] = item
        self._tokens[item.id] = set(tokenize(item.key_text()))
        self._repeats[(item.image_hash, item.slot) if item.image_hash else (None, item.text)] = item.id
        if item.slot and item.superseded_by is None:
            self._slots[item.slot] = item.id
        self.keys[item.id] = self._next_key
        self._next_key += 1
        self.bm25.add(self.keys[item.id], item.key_text())
        if vt is not None:
            self.vec_text[item.id] = vt
            self._index().add(self.keys[item.id], vt)
        if vi is not None:
            self.vec_image[item.id] = vi

    def _replace(self, item: MemoryItem, vt: np.ndarray | None, vi: np.ndarray | None) -> None:
        key = self.keys[item.id]
        self.items[item.id] = item
        self._tokens[item.id] = set(tokenize(item.key_text()))
        self.bm25.add(key, item.key_text())
        if self.vec_text.pop(item.id, None) is not None:
            self._index().remove(key)
        if vt is not None:
            self.vec_text[item.id] = vt
            self._index().add(key, vt)
        self.vec_image.pop(item.id, None)
        if vi is not None:
            self.vec_image[item.id] = vi

    def _remove(self, item_id: str) -> None:
        key = self.keys.pop(item_id)
        del self.items[item_id]
        del self._tokens[item_id]
        self.bm25.remove(key)
        if self.vec_text.pop(item_id, None) is not None:
            self._index().remove(key)
        self.vec_image.pop(item_id, None)

    # --- capacity ------------------------------------------------------------------------------------------
    def _enforce_capacity(self, now: int) -> None:
        cap = self.settings.capacity
        while cap and len(self.items) > cap:
            stale = sorted(
                (it for it in self.items.values() if it.superseded_by is not None), key=lambda it: (it.turns[-1], it.id)
            )
            if stale:
                self._drop(stale[0].id)
            elif self.settings.policy == "evict":
                self._drop(min(self.items.values(), key=lambda it: (recency(it, now), it.turns[-1], it.id)).id)
            else:
                self._merge_most_similar()

    def _drop(self, item_id: str) -> None:
        self._remove(item_id)
        self._log("drop", id=item_id)

    def _similarity(self, a: MemoryItem, b: MemoryItem) -> float:
        if a.id in self.vec_image and b.id in self.vec_image:
            return float(self.vec_image[a.id] @ self.vec_image[b.id])
        if a.id in self.vec_text and b.id in self.vec_text:
            return float(self.vec_text[a.id] @ self.vec_text[b.id])
        return _jaccard(self._tokens[a.id], self._tokens[b.id])

    def _merge_most_similar(self) -> None:
        ordered = sorted(self.items.values(), key=lambda it: (it.turn, it.id))
        sims = [self._similarity(a, b) for a, b in zip(ordered, ordered[1:])]
        j = max(range(len(sims)), key=lambda i: (round(sims[i], 12), -i))  # ties: the earliest pair
        a, b = ordered[j], ordered[j + 1]
        merged = merge_items(a, b)
        vt = _mean(self.vec_text.get(a.id), self.vec_text.get(b.id))
        vi = _mean(self.vec_image.get(a.id), self.vec_image.get(b.id))
        self._remove(b.id)
        self._replace(merged, vt, vi)  # in a's place: a replayed journal gives the same order
        self._log("drop", id=b.id)
        self._log("put", item=merged)
        if self.store is not None:
            self.store.save_vectors(merged, vt, vi)

    # --- retrieval -----------------------------------------------------------------------------------------
    def retrieve(
        self, query: str, now: int, *, settings: ScoreSettings | None = None, query_image: str | None = None
    ) -> list[Scored]:
        """Every candidate item ranked by the score (best first), with its score parts."""
        s = settings or self.settings.score
        if not self.items:
            return []
        qv = self.kit.text_vectors([query])
        qv = None if qv is None else qv[0]
        cands = self._candidates(query, qv, now)
        dense = None
        if qv is not None:
            dense = np.array([float(self.vec_text[it.id] @ qv) if it.id in self.vec_text else 0.0 for it in cands])
            if self.kit.joint:  # a joint encoder: the query meets the picture itself too
                dense = np.maximum(
                    dense, [float(self.vec_image[it.id] @ qv) if it.id in self.vec_image else -1.0 for it in cands]
                )
        if query_image is not None and self.kit.image is not None:
            qis = self.kit.image_vectors([query_image])
            assert qis is not None  # there is an image encoder
            qi = qis[0]
            img = np.array([float(self.vec_image[it.id] @ qi) if it.id in self.vec_image else -1.0 for it in cands])
            dense = img if dense is None else np.maximum(dense, img)
        bm25 = self.bm25.scores(query, [self.keys[it.id] for it in cands])
        parts = components(cands, now, dense=dense, bm25=bm25, settings=s)
        scores, scaled = combine(parts, [it.superseded_by is not None for it in cands], s)
        return [
            Scored(cands[i], float(scores[i]), _Parts(parts, scaled, i, float(scores[i]))) for i in rank(cands, scores)
        ]

    def _candidates(self, query: str, qv: np.ndarray | None, now: int) -> list[MemoryItem]:
        live = list(self.items.values())
        n = self.settings.candidates
        if len(live) <= n:
            return live
        by_key = {self.keys[it.id]: it for it in live}
        chosen: set[int] = set()
        if qv is not None:
            chosen.update(self._index().search(qv, n))
        keys = list(by_key)
        top = np.argsort(-self.bm25.scores(query, keys), kind="stable")[:n]
        chosen.update(keys[i] for i in top)
        chosen.update(sorted(keys, key=lambda k: -by_key[k].turns[-1])[: max(n // 4, 1)])
        return [by_key[k] for k in sorted(chosen)]

    def touch(self, ids: Sequence[str], now: int) -> None:
        """Recall: the items were used at turn `now`; their access count, last access and strength grow."""
        ids = [i for i in ids if i in self.items]
        apply_touch(self.items, ids, now, self.settings.score)
        if ids:
            self._log("touch", ids=list(ids), turn=now)

    def _log(self, op: str, **row: Any) -> None:
        if self.store is not None:
            if "item" in row:
                row["item"] = row["item"].to_dict()
            self.store.log({"op": op, **row})

    def close(self) -> None:
        if self.store is not None:
            self.store.flush()


def apply_touch(items: dict[str, MemoryItem], ids: Sequence[str], now: int, s: ScoreSettings) -> None:
    for i in ids:
        it = items[i]
        it.access_count += 1
        it.last_access = max(it.last_access, now)
        it.strength += s.decay * s.growth


def merge_items(a: MemoryItem, b: MemoryItem) -> MemoryItem:
    """One item standing for two adjacent ones (MA-LMM-style merging)."""
    return MemoryItem(
        id=a.id,
        kind=a.kind if a.kind == b.kind else "turn",
        text=f"{a.text} | {b.text}",
        turn=a.turn,
        turns=sorted(a.turns + b.turns),
        content=content_hash(a.content + b.content, None),
        key=f"{a.key} {b.key}".strip(),
        image=b.image or a.image,
        image_hash=b.image_hash or a.image_hash,
        slot=b.slot or a.slot,
        saliency=max(a.saliency, b.saliency),
        access_count=a.access_count + b.access_count,
        last_access=max(a.last_access, b.last_access),
        strength=max(a.strength, b.strength),
        superseded_by=a.superseded_by if (a.superseded_by and b.superseded_by) else None,
        merged=a.merged + [b.id] + b.merged,
        meta={**b.meta, **a.meta},
    )


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


def _mean(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return a if b is None else b
    return rounded(normalize(((a + b) / 2)[None]))[0]
