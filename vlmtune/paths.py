"""Where vlmtune keeps what it builds once per machine: every cache path is named here.

$VLMTUNE_CACHE (default ~/.cache/vlmtune)
  models/       the tiny base VLM, one directory per build setting (models/tiny-llava-<key>)
  gguf/         GGUF checkpoints dequantized once (gemma3-270m, *.gguf)
  standins/     tiny random-weight stand-ins of each model family (run --smoke)
  smoke-data/   shapes-world fixtures for --smoke when a recipe's data is not on this machine
  teacher/      teacher response caches, one JSONL per teacher model (vlmtune teach)
  embeddings/   memory embeddings and key captions by content hash, one folder per encoder (vlmtune memory embed)
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """The cache root: `cache` when given, else $VLMTUNE_CACHE, else ~/.cache/vlmtune."""
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("VLMTUNE_CACHE", Path.home() / ".cache" / "vlmtune"))


def models_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "models"


def gguf_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "gguf"


def standins_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "standins"


def smoke_data_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "smoke-data"


def teacher_cache(model: str, cache: str | os.PathLike | None = None) -> Path:
    """The default response cache of a teacher model (keys inside name the model too, so sharing is safe)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)[:80] or "teacher"
    return cache_root(cache) / "teacher" / f"{safe}.jsonl"


def embeddings_dir(cache: str | os.PathLike | None = None) -> Path:
    """Embeddings (and key captions) cached by content hash, one folder per encoder identity (`vlmtune.memory`)."""
    return cache_root(cache) / "embeddings"
