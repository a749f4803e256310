"""Batched greedy generation with left padding. The gold answer never enters the input.

    texts = generate(model, processor, examples, batch_size=32, max_new_tokens=16)
"""

from __future__ import annotations

import torch

from vlmtune.data.example import Example
from vlmtune.logs import progress_bar
from vlmtune.processing import Model, Processor, encode_texts, load_image_cached, prompt_text, to_model, tokenizer_of

__all__ = ["generate", "prompt_text"]


@torch.inference_mode()
def generate(model: Model, processor: Processor, examples: list[Example], *, batch_size: int = 32,
             max_new_tokens: int = 16, desc: str = "generate") -> list[str]:
    """Greedy answers for each example, in order."""
    tok = tokenizer_of(processor)
    old_side = tok.padding_side
    tok.padding_side = "left"  # generation continues from the last position: pads must be on the left
    outputs: list[str] = []
    try:
        for i in progress_bar(range(0, len(examples), batch_size), desc=desc):
            batch = examples[i: i + batch_size]
            texts = [prompt_text(processor, ex) for ex in batch]
            images = [[load_image_cached(p) for p in ex.images] for ex in batch]
            enc = to_model(encode_texts(processor, texts, images, padding=True), model)
            out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = old_side
    return outputs
