"""Memory items: what a memory bank holds, and the content hashes that key their embeddings.

    item = MemoryItem.new(turn=12, kind="image", text="Here is photo #417, Mina's drawing.",
                          image="images/t012.png", slot="photo #417")

An item is a past turn (text), an image with its key text (a tag, and a caption as an extra key), a fact
or an update. Each carries the turns it was written at (the same content written again reinforces it),
its access count and last access (retrieval refreshes it), its strength (the time constant of its
recency decay, which grows on recall), its saliency, and the id of the item that superseded it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("turn", "image", "fact", "update")
# Episode turn kinds (vlmtune.data.synth.memory, the readers) -> item kinds.
TURN_KINDS = {
    "chat": "turn",
    "text": "turn",
    "show": "image",
    "again": "image",
    "image_update": "image",
    "image": "image",
    "fact": "fact",
    "update": "update",
}


def identity_id(identity: dict[str, Any]) -> str:
    """A short, stable name for an encoder identity (folder names, state files)."""
    import json

    blob = json.dumps(identity, sort_keys=True)
    return f"{identity.get('name', 'encoder')}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def text_hash(text: str) -> str:
    """Content hash of a text (the key of its embedding in a cache)."""
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def file_hash(path: str | Path) -> str:
    """Content hash of a file's bytes (the key of an image's embedding): the same picture anywhere, one key.
    Memoised by (path, size, modification time), so a picture written to several banks is read once."""
    st = os.stat(path)
    return _file_hash(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256(b"file\0")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(text: str, image_hash: str | None) -> str:
    """What makes two writes the same item: the text and the image bytes."""
    return hashlib.sha256(f"{text}\0{image_hash or ''}".encode()).hexdigest()[:24]


@dataclass
class MemoryItem:
    id: str
    kind: str  # turn | image | fact | update
    text: str  # what is rendered in a reminder
    turn: int  # first written
    turns: list[int]  # every turn it was written (reinforcement, merges)
    content: str  # content hash (text + image bytes)
    key: str = ""  # extra retrieval key (key expansion: an image's caption); not rendered
    image: str | None = None  # image path (re-attached when retrieved, up to memory.max_images)
    image_hash: str | None = None
    slot: str | None = None  # what it sets ("Leo's favourite colour"): a later item with the slot supersedes it
    saliency: float = 0.0  # novelty at write time, an explicit mark, or a teacher's rating, in [0, 1]
    access_count: int = 0  # recalls (retrievals that used it)
    last_access: int = 0  # turn of the last write or recall
    strength: float = 1.0  # recency time constant, in turns (grows on recall)
    superseded_by: str | None = None
    merged: list[str] = field(default_factory=list)  # ids merged into it (MA-LMM-style capacity merging)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frequency(self) -> int:
        """Writes plus recalls: how often it came up."""
        return len(self.turns) + self.access_count

    def key_text(self) -> str:
        """The text its relevance is computed on: what it says, plus any expanded key."""
        return f"{self.text} {self.key}".strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryItem:
        return cls(**d)
