"""Pre-extraction (the seed's stage 1): cache a dataset's embeddings and key captions before any run needs them.

    stats = embed_dataset("data/shapes-memory/episodes.jsonl", kit)     # or a JSONL file of Examples

Every turn text, question and image of the file goes through the toolkit's encoders (and the captioner, for
key expansion) in chunks, with a progress bar; results land in the shared caches under
$VLMTUNE_CACHE/embeddings/, keyed by content hash and encoder identity. A chunk is flushed (one safetensors
shard) before the next starts, so an interrupted extraction resumes where it stopped, and a later run of
any recipe or benchmark with the same encoders reads the vectors instead of computing them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vlmtune.errors import DataError
from vlmtune.jsonlines import read_json_lines
from vlmtune.logs import progress_bar
from vlmtune.memory.items import file_hash, text_hash
from vlmtune.memory.toolkit import Toolkit

log = logging.getLogger(__name__)

CHUNK = 256


@dataclass
class EmbedStats:
    texts: int
    images: int
    new_texts: int
    new_images: int
    captions: int


def dataset_contents(path: str | Path, *, connector: bool = False) -> tuple[list[str], dict[str, str]]:
    """(texts, {image path: the text said with it}) of an episodes file or an Examples JSONL file, each once, in
    file order. An image item's key is its text plus its caption, so its vector is computed after captioning.
    `connector`: the texts of a memory connector's items (vlmtune.memory.connector.memory_items) instead of the user
    messages, which is all a connector reads."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path), fix="give an episodes.jsonl or a data JSONL file")
    first = next(read_json_lines(path, what="an episodes.jsonl or a data JSONL file"), None)
    is_episodes = first is not None and isinstance(first.value, dict) and "turns" in first.value
    texts: dict[str, None] = {}
    images: dict[str, str] = {}
    if is_episodes:
        from vlmtune.memory.episodes import read_episodes

        for ep in read_episodes(path).values():
            for t in ep.turns:
                if t.image:
                    images.setdefault(t.image, t.text)
                else:
                    texts[t.text] = None
    else:
        from vlmtune.data.example import iter_jsonl

        for ex in iter_jsonl(path):
            for m in ex.messages:
                if m["role"] == "user" and not connector:
                    texts[m["content"].replace("<image>", "").strip()] = None
            for p in ex.images:
                images.setdefault(p, "")
            if connector and ex.images:
                from vlmtune.memory.connector import memory_items

                texts.update((it["text"], None) for it in memory_items(ex))
    return list(texts), images


def embed_dataset(path: str | Path, kit: Toolkit, *, connector: bool = False) -> EmbedStats:
    texts, said = dataset_contents(path, connector=connector)
    images = list(said)
    new_t = sum(1 for t in texts if kit.text_cache is not None and text_hash(t) not in kit.text_cache)
    hashes = [file_hash(p) for p in images]
    new_i = sum(1 for h in hashes if kit.image_cache is not None and h not in kit.image_cache)
    captions = 0
    for start in progress_bar(
        range(0, len(images), CHUNK), desc="memory embed: images", total=(len(images) + CHUNK - 1) // CHUNK
    ):
        chunk, hs = images[start : start + CHUNK], hashes[start : start + CHUNK]
        kit.image_vectors(chunk, hs)
        caps = kit.key_texts(chunk, hs)
        captions += sum(1 for c in caps if c)
        keys = [f"{said[p]} {c}".strip() for p, c in zip(chunk, caps)]
        kit.text_vectors([k for k in keys if k])  # the image items' key vectors (an image with no words has none)
        kit.flush()
    for start in progress_bar(
        range(0, len(texts), CHUNK), desc="memory embed: texts", total=(len(texts) + CHUNK - 1) // CHUNK
    ):
        kit.text_vectors(texts[start : start + CHUNK])
        kit.flush()
    return EmbedStats(len(texts), len(images), new_t, new_i, captions)
