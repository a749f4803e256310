"""Batched greedy generation with left padding. The gold answer never enters the input.

    texts = generate(model, processor, examples, batch_size=32, max_new_tokens=16)
"""

from __future__ import annotations

from typing import Any

import torch

from vlmtune.data.example import Example
from vlmtune.train.collate import _load_image_cached, render, special_tokens_kw


def prompt_text(processor, ex: Example) -> str:
    """The rendered prompt: the conversation without its final answer, plus the generation prompt."""
    return render(processor, ex.prompt_messages(), add_generation_prompt=True)


def _device_of(model) -> torch.device:
    return next(p for p in model.parameters()).device


@torch.inference_mode()
def generate(model, processor, examples: list[Example], *, batch_size: int = 32, max_new_tokens: int = 16,
             progress: bool = True, desc: str = "generate") -> list[str]:
    """Greedy answers for each example, in order."""
    from tqdm.auto import tqdm

    tok = getattr(processor, "tokenizer", processor)
    old_side = tok.padding_side
    tok.padding_side = "left"  # generation continues from the last position: pads must be on the left
    device = _device_of(model)
    outputs: list[str] = []
    try:
        for i in tqdm(range(0, len(examples), batch_size), desc=desc, disable=not progress, leave=False):
            batch = examples[i: i + batch_size]
            texts = [prompt_text(processor, ex) for ex in batch]
            # Images nested per example: processors that split them by prompt (Gemma 3) need it; others flatten.
            images = [[_load_image_cached(p) for p in ex.images] for ex in batch]
            kw: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt",
                                  **special_tokens_kw(processor, texts)}
            if any(images):
                kw["images"] = images
            enc = processor(**kw) if hasattr(processor, "image_processor") else tok(**kw)
            enc = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in enc.items()}
            if "pixel_values" in enc and enc["pixel_values"].is_floating_point():
                enc["pixel_values"] = enc["pixel_values"].to(next(model.parameters()).dtype)
            out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = old_side
    return outputs
