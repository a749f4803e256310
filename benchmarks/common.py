"""Set-up shared by the benchmarks: quiet logs, thread count, and one random-init tiny LLaVA."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def prepare(threads: int | None) -> float:
    """Silence transformers' logging, pin the thread count if asked; return the 1-minute load before the run."""
    import torch
    from transformers.utils import logging as hf_logging

    from vlmtune.logs import set_progress

    hf_logging.set_verbosity_error()
    set_progress(False)  # no bars in a benchmark's output
    if threads:
        torch.set_num_threads(threads)
    return os.getloadavg()[0]


def tiny_model(root: Path, seed: int) -> tuple[Any, Any, Any]:
    """(model, processor, TinyBaseConfig) of a fresh random-init tiny LLaVA saved under root/model, fp32, eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmtune.models.tiny import TinyBaseConfig, save_untrained

    tiny = TinyBaseConfig(seed=seed)
    model_dir = save_untrained(tiny, root / "model")
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(model_dir), tiny
