"""A bank on disk: append-only items JSONL, vectors in safetensors, a state file naming the encoders.

    bank = open_bank("runs/x/memory/bank", kit, BankSettings())   # new, or replayed from its files
    bank.write(Write(turn=0, text="Leo's favourite colour is green.", kind="fact", slot="Leo's favourite colour"))
    bank.close()                                                   # flushes the pending vectors

Folder:
  state.json      format version, the encoders' identities (text, image, key expansion), the bank settings;
                  written atomically. Opening a bank with other encoders is a ConfigError naming both.
  items.jsonl     every change as it happens, one JSON line each: put (a whole item: new, reinforced or
                  merged), touch (recalled ids and the turn), supersede (id, by), drop (evicted or merged
                  away). One write() per change on an O_APPEND descriptor, so a kill -9 loses at most the
                  line being written; a torn last line is cut off when the bank is opened.
  embeddings/     the items' vectors (`EmbeddingCache` shards: float16 safetensors, keyed by item content and
                  image hash), flushed every `flush_every` new items and on close. Vectors that were not
                  flushed are recomputed from the items' text and images when the bank is opened.
Replaying the journal gives the same items, in the same order, as the bank that wrote it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vlmtune.data.example import atomic_write_json
from vlmtune.errors import ConfigError
from vlmtune.memory.bank import BankSettings, MemoryBank, apply_touch
from vlmtune.memory.cache import EmbeddingCache, append_journal, read_journal
from vlmtune.memory.items import MemoryItem
from vlmtune.memory.toolkit import Toolkit

log = logging.getLogger(__name__)

FORMAT = 1


def _settings_dict(settings: BankSettings) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(settings)


class BankStore:
    def __init__(self, folder: str | os.PathLike, kit: Toolkit, settings: BankSettings, *, flush_every: int = 64):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = self.dir / "items.jsonl"
        state_path = self.dir / "state.json"
        encoders = kit.identities()
        if state_path.exists():
            import json

            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state.get("encoders") != encoders:
                raise ConfigError(
                    f"the memory bank in {self.dir} was built with encoders {_names(state.get('encoders'))}, but this "
                    f"run uses {_names(encoders)} (their identities differ: {state.get('encoders')} vs {encoders}); "
                    "vectors of different encoders cannot be compared. Fix: use the bank's encoders "
                    "(memory.text_encoder / memory.image_encoder), or give another memory.bank_dir to build a new bank"
                )
        else:
            atomic_write_json(
                state_path, {"format": FORMAT, "encoders": encoders, "settings": _settings_dict(settings)}
            )
        emb = self.dir / "embeddings"
        self.text_vecs = EmbeddingCache(emb / "text", kit.text.identity, flush_every=flush_every) if kit.text else None
        self.image_vecs = (
            EmbeddingCache(emb / "image", kit.image.identity, flush_every=flush_every) if kit.image else None
        )

    def log(self, row: dict[str, Any]) -> None:
        append_journal(self.journal, [row])

    def save_vectors(self, item: MemoryItem, vt: np.ndarray | None, vi: np.ndarray | None) -> None:
        if vt is not None and self.text_vecs is not None:
            self.text_vecs.put_many([item.content], vt[None])
        if vi is not None and self.image_vecs is not None and item.image_hash:
            self.image_vecs.put_many([item.image_hash], vi[None])

    def flush(self) -> None:
        for c in (self.text_vecs, self.image_vecs):
            if c is not None:
                c.flush()

    def size_bytes(self, *, images: bool = False) -> int:
        """Bytes on disk: the journal, the state file and the vectors (image vectors only when asked)."""
        files = [self.journal, self.dir / "state.json", *(self.dir / "embeddings" / "text").glob("*")]
        if images:
            files += list((self.dir / "embeddings" / "image").glob("*"))
        return sum(f.stat().st_size for f in files if f.is_file())


def _names(encoders: dict[str, Any] | None) -> str:
    if not encoders:
        return "(none recorded)"
    return ", ".join(f"{k}={(v or {}).get('name', 'none')}" for k, v in encoders.items())


def open_bank(
    folder: str | os.PathLike, kit: Toolkit, settings: BankSettings | None = None, *, flush_every: int = 64
) -> MemoryBank:
    """A bank backed by `folder`: created empty, or replayed from its journal (module docstring)."""
    settings = settings or BankSettings()
    store = BankStore(folder, kit, settings, flush_every=flush_every)
    bank = MemoryBank(kit, settings, store=None)  # replay without logging again
    items: dict[str, MemoryItem] = {}
    for row in read_journal(store.journal):
        op = row.get("op")
        if op == "put":
            item = MemoryItem.from_dict(row["item"])
            items[item.id] = item
        elif op == "touch":
            apply_touch(items, [i for i in row["ids"] if i in items], row["turn"], settings.score)
        elif op == "supersede" and row["id"] in items:
            items[row["id"]].superseded_by = row["by"]
        elif op == "drop":
            items.pop(row["id"], None)
    recomputed = 0
    for item in items.values():
        vt = _vector(store.text_vecs, item.content)
        if vt is None and (texts := kit.text_vectors([item.key_text()])) is not None:  # None: no text encoder
            vt, recomputed = texts[0], recomputed + 1
            store.save_vectors(item, vt, None)
        vi = _vector(store.image_vecs, item.image_hash) if item.image_hash else None
        if (
            vi is None
            and item.image
            and (images := kit.image_vectors([item.image], [item.image_hash] if item.image_hash else None)) is not None
        ):
            vi, recomputed = images[0], recomputed + 1
            store.save_vectors(item, None, vi)
        bank._add(item, vt, vi)
    if items:
        log.info(
            f"[memory] opened the bank in {store.dir}: {len(items)} items"
            + (f", {recomputed} vector(s) recomputed (not flushed before the last stop)" if recomputed else "")
        )
    store.flush()
    bank.store = store
    return bank


def _vector(cache: EmbeddingCache | None, key: str | None) -> np.ndarray | None:
    if cache is None or key is None:
        return None
    return cache.get_many([key]).get(key)
