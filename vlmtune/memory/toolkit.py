"""What a bank computes with: its encoders, their embedding caches, and the captioner that expands image keys.

    kit = Toolkit.build(MemorySettings(), model=model, processor=processor, model_hash=ref_hash)
    vecs = kit.text_vectors(["Leo's favourite colour is green."])     # cached by content hash
    caps = kit.key_texts(["images/t012.png"])                          # the VLM's captions, cached

Key expansion (LongMemEval): an image's caption, written by the VLM itself ("Describe the image."), is an
extra retrieval key of the image item, so a question in words ("which photo had a yellow triangle?") can
find a picture even when no encoder puts texts and images in one space. The caption is a key only: a
reminder shows the image and the words the user said, never the caption.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmtune.memory.cache import EmbeddingCache, KeyTexts, cache_for, rounded
from vlmtune.memory.encoders import Encoder, build_encoder
from vlmtune.memory.items import file_hash
from vlmtune.paths import embeddings_dir

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe the image."


class Captioner:
    """The VLM's own captions of images (greedy), cached by image hash and model."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_hash: str | None,
        max_new_tokens: int = 48,
        batch_size: int = 32,
        cache: str | os.PathLike | None = None,
    ):
        self.model, self.processor = model, processor
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.identity = {
            "name": "caption",
            "model_hash": model_hash,
            "prompt": CAPTION_PROMPT,
            "max_new_tokens": max_new_tokens,
        }
        self.store = KeyTexts(embeddings_dir(cache) / "captions", self.identity)

    def captions(self, paths: Sequence[str], hashes: Sequence[str]) -> list[str]:
        from vlmtune.data.example import IMAGE_TOKEN, Example
        from vlmtune.infer.generate import generate

        todo = {h: p for p, h in zip(paths, hashes) if self.store.get(h) is None}
        if todo:
            exs = [
                Example(
                    id=h,
                    task="caption",
                    images=[p],
                    messages=[{"role": "user", "content": f"{IMAGE_TOKEN}\n{CAPTION_PROMPT}"}],
                )
                for h, p in todo.items()
            ]
            texts = generate(
                self.model,
                self.processor,
                exs,
                batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens,
                desc="memory: caption images",
            )
            self.store.put_many(list(zip(todo, texts)))
        return [self.store.get(h) or "" for h in hashes]


@dataclass
class Toolkit:
    """Encoders (None: not used), their caches, and the optional captioner."""

    text: Encoder | None
    image: Encoder | None
    captioner: Captioner | None = None
    cache: str | os.PathLike | None = None
    cached: bool = True  # False: every vector computed afresh (latency measurements)
    text_cache: EmbeddingCache | None = field(init=False, default=None)
    image_cache: EmbeddingCache | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.cached:
            self.text_cache = cache_for(self.text, self.cache)
            self.image_cache = self.text_cache if self.image is self.text else cache_for(self.image, self.cache)

    @classmethod
    def build(
        cls,
        text_spec: str,
        image_spec: str,
        *,
        caption: bool,
        model: Any = None,
        processor: Any = None,
        model_hash: str | None = None,
        cache: str | os.PathLike | None = None,
        caption_tokens: int = 48,
    ) -> Toolkit:
        text = build_encoder(text_spec)
        image = (
            text
            if image_spec == text_spec and text is not None and "image" in text.modalities
            else build_encoder(image_spec, model=model, processor=processor, model_hash=model_hash)
        )
        captioner = None
        if caption and model is not None and getattr(processor, "image_processor", None) is not None:
            captioner = Captioner(model, processor, model_hash=model_hash, cache=cache, max_new_tokens=caption_tokens)
        return cls(text, image, captioner, cache)

    def identities(self) -> dict[str, Any]:
        """What a bank's state file records: vectors made with other encoders are not comparable."""
        return {
            "text": self.text.identity if self.text else {"name": "bm25"},
            "image": self.image.identity if self.image else {"name": "none"},
            "key_expansion": self.captioner.identity if self.captioner else None,
        }

    @property
    def joint(self) -> bool:
        """Texts and images in one space: a text query meets an image's vector directly."""
        return self.text is not None and self.image is not None and self.text.space == self.image.space

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray | None:
        if self.text is None:
            return None
        if self.text_cache is None:
            return rounded(self.text.encode_texts(texts))
        return self.text_cache.embed_texts(self.text, texts)

    def image_vectors(self, paths: Sequence[str], hashes: Sequence[str] | None = None) -> np.ndarray | None:
        if self.image is None:
            return None
        if self.image_cache is None:
            return rounded(self.image.encode_images(paths))
        return self.image_cache.embed_images(self.image, paths, hashes)

    def key_texts(self, paths: Sequence[str], hashes: Sequence[str] | None = None) -> list[str]:
        if self.captioner is None:
            return [""] * len(paths)
        return self.captioner.captions(paths, list(hashes) if hashes is not None else [file_hash(p) for p in paths])

    def flush(self) -> None:
        for c in (self.text_cache, self.image_cache):
            if c is not None:
                c.flush()
