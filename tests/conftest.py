"""Shared fixtures: a micro random-weight LLaVA built from the tiny config (no downloads), and small datasets."""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MICRO = dict(vision_hidden=32, vision_layers=1, text_hidden=48, text_layers=1, heads=2, vocab_size=400)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """A randomly initialised micro LLaVA saved with save_pretrained (loads through the Auto classes)."""
    from vlmtune.models.tiny import TinyBaseConfig, save_untrained

    return save_untrained(TinyBaseConfig(**MICRO), tmp_path_factory.mktemp("micro") / "model")


@pytest.fixture(scope="session")
def count_data(tmp_path_factory):
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize

    path = synthesize("count", 48, tmp_path_factory.mktemp("count"), seed=1)
    return load_jsonl(path)


@pytest.fixture
def log_lines(caplog):
    """The messages vlmtune logs at INFO and above during the test (a live list)."""
    caplog.set_level(logging.INFO, logger="vlmtune")
    return _Messages(caplog)


class _Messages:
    def __init__(self, caplog):
        self._caplog = caplog

    def __iter__(self):
        return iter(self._caplog.messages)

    def __getitem__(self, i):
        return self._caplog.messages[i]

    def __len__(self):
        return len(self._caplog.messages)

    def __repr__(self):
        return repr(self._caplog.messages)


@pytest.fixture(scope="session")
def lively_model_dir(micro_model_dir, tmp_path_factory):
    """The micro LLaVA with larger random weights (seeded), so that its greedy answers differ from image to image
    and run for several tokens (the default init answers every prompt with newlines). Tokens that do not decode to
    printable text are suppressed through its generation_config, so a terminal shows its answers as they are."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path_factory.mktemp("lively") / "model"
    model = AutoModelForImageTextToText.from_pretrained(micro_model_dir)
    processor = AutoProcessor.from_pretrained(micro_model_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    tok = processor.tokenizer
    keep = {tok.eos_token_id}
    model.generation_config.suppress_tokens = [
        i
        for i in range(len(tok))
        if i not in keep and not (lambda s: s.strip() and s.isprintable() and s.isascii())(tok.decode([i]))
    ]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
