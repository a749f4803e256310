"""Embeddings cached by content hash: one folder per encoder identity, safetensors shards, no pickle.

    cache = EmbeddingCache.for_encoder(encoder)              # $VLMTUNE_CACHE/embeddings/<encoder id>/
    vecs = cache.embed_texts(encoder, ["Leo's favourite colour is green."])   # computed once, then read
    cache.flush()                                            # pending vectors -> one new shard, atomically

The folder holds `encoder.json` (the encoder's identity: a folder made for another encoder is refused) and
`shard-NNNNNN.safetensors` files, each a float16 matrix "vectors" [n, dim] with its keys (content hashes,
`vlmtune.memory.items.text_hash` / `file_hash`) in the shard's metadata. A shard is written whole and renamed
into place, so an interrupted extraction keeps every flushed shard and resumes from there. Vectors are
stored in float16 and always returned as float32 of that rounding, so a vector read back equals the one
first returned.

`KeyTexts` keeps generated key texts (captions) the same way, keyed by image hash and the captioner's identity:
an append-only JSONL file whose torn last line (a killed writer) is ignored.

This is also the input side of a trainable memory connector: pre-extracted vectors for a dataset are read
with `EmbeddingCache.for_encoder(encoder).get_many(keys)`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmtune.data.example import atomic_write_bytes, atomic_write_json
from vlmtune.errors import ConfigError
from vlmtune.memory.items import file_hash, identity_id, text_hash
from vlmtune.paths import embeddings_dir

log = logging.getLogger(__name__)

STORE_DTYPE = np.float16


def rounded(vecs: np.ndarray) -> np.ndarray:
    """Vectors as stored (float16) and used (float32): live and reloaded banks score identically."""
    return np.asarray(vecs, dtype=np.float32).astype(STORE_DTYPE).astype(np.float32)


class EmbeddingCache:
    """Vectors of one encoder keyed by content hash, persisted as safetensors shards."""

    def __init__(self, folder: str | os.PathLike, identity: dict[str, Any], *, flush_every: int = 512):
        self.dir = Path(folder)
        self.identity = identity
        self.flush_every = flush_every
        manifest = self.dir / "encoder.json"
        if manifest.exists():
            stored = json.loads(manifest.read_text(encoding="utf-8"))
            if stored != identity:
                raise ConfigError(
                    f"{self.dir} holds embeddings of another encoder ({stored}), not of {identity}; "
                    "use that encoder, or another folder"
                )
        else:
            atomic_write_json(manifest, identity)
        self._vecs: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        self._shards = 0
        self._load()

    @classmethod
    def for_encoder(cls, encoder: Any, cache: str | os.PathLike | None = None) -> EmbeddingCache:
        """The shared cache folder of `encoder` under $VLMTUNE_CACHE/embeddings/."""
        return cls(embeddings_dir(cache) / identity_id(encoder.identity), encoder.identity)

    @classmethod
    def open_existing(cls, folder: str | os.PathLike) -> EmbeddingCache:
        manifest = Path(folder) / "encoder.json"
        if not manifest.exists():
            raise ConfigError(
                f"{folder} is not an embedding folder (no encoder.json); write one with "
                "vlmtune.memory.cache.EmbeddingCache(folder, identity)"
            )
        return cls(folder, json.loads(manifest.read_text(encoding="utf-8")))

    def _load(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="numpy") as f:
                keys = json.loads(f.metadata()["keys"])
                vecs = f.get_tensor("vectors").astype(np.float32)
            self._vecs.update(zip(keys, vecs))
            self._shards += 1

    def __len__(self) -> int:
        return len(self._vecs) + len(self._pending)

    def __contains__(self, key: str) -> bool:
        return key in self._vecs or key in self._pending

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for k in keys:
            v = self._vecs.get(k)
            if v is None:
                v = self._pending.get(k)
            if v is not None:
                out[k] = v
        return out

    def put_many(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        for k, v in zip(keys, rounded(vecs)):
            if k not in self:
                self._pending[k] = v
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the pending vectors as one new shard (atomically)."""
        if not self._pending:
            return
        from safetensors.numpy import save

        keys = list(self._pending)
        data = save(
            {"vectors": np.stack([self._pending[k] for k in keys]).astype(STORE_DTYPE)},
            metadata={"keys": json.dumps(keys)},
        )
        while (self.dir / f"shard-{self._shards:06d}.safetensors").exists():
            self._shards += 1
        atomic_write_bytes(self.dir / f"shard-{self._shards:06d}.safetensors", data)
        self._shards += 1
        self._vecs.update(self._pending)
        self._pending = {}

    def _embed(self, keys: list[str], items: Sequence[Any], compute: Any, batch: int = 256) -> np.ndarray:
        missing = [i for i, k in enumerate(keys) if k not in self]
        for start in range(0, len(missing), batch):
            idx = missing[start : start + batch]
            todo = {keys[i]: items[i] for i in idx}  # duplicates inside a batch are computed once
            self.put_many(list(todo), compute(list(todo.values())))
        found = self.get_many(keys)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, int(self.identity["dim"])), np.float32)

    def embed_texts(self, encoder: Any, texts: Sequence[str]) -> np.ndarray:
        return self._embed([text_hash(t) for t in texts], texts, encoder.encode_texts)

    def embed_images(self, encoder: Any, paths: Sequence[str], hashes: Sequence[str] | None = None) -> np.ndarray:
        keys = list(hashes) if hashes is not None else [file_hash(p) for p in paths]
        return self._embed(keys, paths, encoder.encode_images)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of an append-only file. A torn last line (a writer killed mid-line) is cut off the file,
    with a warning, so the next append starts on a clean line; a bad line elsewhere is an error."""
    from vlmtune.jsonlines import read_json_lines

    if not path.exists():
        return []
    end = _whole_lines_end(path)
    if end < path.stat().st_size:
        log.warning(f"[memory] {path}: the last line was cut off (an interrupted write) and is dropped")
        with open(path, "r+b") as f:
            f.truncate(end)
    return [
        line.value
        for line in read_json_lines(
            path,
            what="a memory journal",
            fix="this file is written by vlmtune's memory; restore it or start a new bank",
        )
    ]


def _whole_lines_end(path: Path, block: int = 1 << 16) -> int:
    """The byte offset just past the file's last newline (0 when it has none), read from the end."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                return start + i + 1
            pos = start
    return 0


def append_journal(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append JSON lines with one write() of whole lines (O_APPEND): a kill -9 tears at most the last one."""
    if not rows:
        return
    blob = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, blob)
    finally:
        os.close(fd)


class KeyTexts:
    """Generated key texts (captions) by image hash, for one captioner, in an append-only JSONL file."""

    def __init__(self, folder: str | os.PathLike, identity: dict[str, Any]):
        self.path = Path(folder) / f"keytexts-{identity_id(identity)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._texts: dict[str, str] = {r["key"]: r["text"] for r in read_journal(self.path)}

    def get(self, key: str) -> str | None:
        return self._texts.get(key)

    def put_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        new = {k: t for k, t in pairs if k not in self._texts}
        append_journal(self.path, [{"key": k, "text": t} for k, t in new.items()])
        self._texts.update(new)


def cache_for(encoder: Any | None, cache: str | os.PathLike | None = None) -> EmbeddingCache | None:
    return None if encoder is None else EmbeddingCache.for_encoder(encoder, cache)
