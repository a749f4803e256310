"""Batched generation with left padding: greedy by default. The gold answer never enters the input.

    texts = generate(model, processor, examples, batch_size=32, max_new_tokens=16)
    new_ids, prompt_lengths = generate_tokens(model, processor, texts, images, max_new_tokens=64,
                                              sampling=Sampling(temperature=0.7, seed=1))

`generate_tokens` is the one place that calls `model.generate`: evaluation, validation, `vlmtune chat`,
`vlmtune serve` and the web UI all go through it, so they decode the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmtune.data.example import Example
from vlmtune.logs import progress_bar
from vlmtune.processing import (
    Model,
    Processor,
    encode_texts,
    example_inputs,
    load_image_cached,
    prompt_text,
    to_model,
    tokenizer_of,
)

__all__ = ["generate", "generate_tokens", "prompt_text", "Sampling", "GREEDY"]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings: greedy unless temperature > 0; `seed` makes sampling repeatable."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def generate_kwargs(self) -> dict[str, Any]:
        if self.greedy:  # None overrides a checkpoint's generation_config sampling defaults
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k or None}


GREEDY = Sampling()


@torch.inference_mode()
def generate_tokens(
    model: Model,
    processor: Processor,
    texts: list[str],
    images: list[list[Any]],
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    streamer: Any = None,
    extra: dict[str, Any] | None = None,
) -> tuple[list[list[int]], list[int]]:
    """New token ids for each rendered prompt (one batch, left padded), and each prompt's length in tokens.

    `images` holds one list of PIL images per prompt; `extra`, more batched model inputs (`example_inputs`).
    A row that ends early is padded after its end token."""
    tok = tokenizer_of(processor)
    old_side = tok.padding_side
    tok.padding_side = "left"  # generation continues from the last position: pads must be on the left
    try:
        enc = to_model({**encode_texts(processor, texts, images, padding=True), **(extra or {})}, model)
    finally:
        tok.padding_side = old_side
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    out = model.generate(
        **enc,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=tok.pad_token_id,
        streamer=streamer,
        **sampling.generate_kwargs(),
    )
    new = out[:, enc["input_ids"].shape[1] :]
    return new.tolist(), [int(n) for n in enc["attention_mask"].sum(dim=1)]


def generate(
    model: Model,
    processor: Processor,
    examples: list[Example],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 16,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers for each example, in order."""
    tok = tokenizer_of(processor)
    outputs: list[str] = []
    for i in progress_bar(range(0, len(examples), batch_size), desc=desc):
        batch = examples[i : i + batch_size]
        texts = [prompt_text(processor, ex) for ex in batch]
        images = [[load_image_cached(p) for p in ex.images] for ex in batch]
        new, _ = generate_tokens(
            model, processor, texts, images, max_new_tokens=max_new_tokens, extra=example_inputs(processor, batch)
        )
        outputs.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    return outputs
