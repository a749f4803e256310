"""Training inputs: the assistant-only loss mask, image-token safety, padding (rendering is `vlmtune.processing`).

The boundary of each assistant turn is found by rendering and
tokenizing the conversation up to that turn with the generation prompt, so the loss mask is exact for
any template whose rendering of a prefix is a prefix of the whole (checked; an error otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmtune.data.example import IMAGE_TOKEN, Example
from vlmtune.errors import DataError
from vlmtune.processing import (
    Processor,
    encode_texts,
    example_inputs,
    image_token_id,
    load_image,
    load_image_cached,
    render,
)

IGNORE = -100
# Per-token processor outputs (Gemma 3 marks image tokens with these); padded and truncated like input_ids.
TOKEN_ALIGNED = ("token_type_ids", "mm_token_type_ids")


def _tokenize(processor, text: str, images: list) -> dict[str, torch.Tensor]:
    """One rendered example -> tensors with batch dimension 1 (image placeholders expanded)."""
    return encode_texts(processor, [text], [images])


@dataclass
class EncodeSettings:
    loss_on: str = "assistant"  # assistant | all
    max_length: int = 256


def encode_example(
    processor: Processor, ex: Example, settings: EncodeSettings, *, cache_images: bool = True
) -> dict[str, Any]:
    """One training example -> {input_ids [T], attention_mask [T], labels [T], pixel_values ..., n_loss_tokens}."""
    loader = load_image_cached if cache_images else load_image
    images = [loader(p) for p in ex.images]
    full_text = render(processor, ex.messages, add_generation_prompt=False)
    enc = _tokenize(processor, full_text, images)
    ids = enc["input_ids"][0]
    labels = torch.full_like(ids, IGNORE)
    img_id = image_token_id(processor)
    n_assistant = 0
    for i, m in enumerate(ex.messages):
        if m["role"] != "assistant":
            continue
        n_assistant += 1
        n_img_before = sum(mm["content"].count(IMAGE_TOKEN) for mm in ex.messages[:i])
        prefix = _tokenize(
            processor, render(processor, ex.messages[:i], add_generation_prompt=True), images[:n_img_before]
        )["input_ids"][0]
        upto = _tokenize(
            processor, render(processor, ex.messages[: i + 1], add_generation_prompt=False), images[:n_img_before]
        )["input_ids"][0]
        start, end = len(prefix), len(upto)
        if not (torch.equal(ids[:start], prefix) and torch.equal(ids[:end], upto)):
            raise DataError(
                f"example '{ex.id}': the chat template's rendering of the conversation up to assistant turn {i} "
                "is not a prefix of the full rendering, so the answer tokens cannot be located",
                field=f"messages[{i}]",
                fix="use a chat template whose turns render incrementally, or train.loss_on=all",
            )
        labels[start:end] = ids[start:end]
    if n_assistant == 0:
        raise DataError(
            f"example '{ex.id}' has no assistant message to train on",
            field="messages",
            fix="add the answer as a final assistant message",
        )
    if settings.loss_on == "all":
        labels = ids.clone()
        labels[enc["attention_mask"][0] == 0] = IGNORE
    if img_id is not None:
        labels[ids == img_id] = IGNORE  # image placeholder positions never carry loss
    if len(ids) > settings.max_length:
        if img_id is not None and bool((ids[settings.max_length :] == img_id).any()):
            raise DataError(
                f"example '{ex.id}' is {len(ids)} tokens; truncating to train.max_length={settings.max_length} "
                "would cut its image tokens (the image would no longer match its features)",
                field="messages",
                fix=f"raise train.max_length to at least {len(ids)} or shorten the text",
            )
        ids, labels = ids[: settings.max_length], labels[: settings.max_length]
    out: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "n_loss_tokens": int((labels != IGNORE).sum()),
    }
    for k, v in {**enc, **example_inputs(processor, [ex])}.items():
        if k not in ("input_ids", "attention_mask") and isinstance(v, torch.Tensor):
            out[k] = v[0][: len(ids)] if k in TOKEN_ALIGNED else v
    if out["n_loss_tokens"] == 0:
        raise DataError(
            f"example '{ex.id}' has no answer tokens left after truncation to train.max_length={settings.max_length}",
            fix="raise train.max_length",
        )
    return out


class Collator:
    """Pads a list of encoded examples (right padding for training) and stacks the vision inputs."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        T = max(len(f["input_ids"]) for f in features)
        B = len(features)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            sl = slice(0, n) if self.padding_side == "right" else slice(T - n, T)
            input_ids[b, sl] = f["input_ids"]
            attention[b, sl] = f["attention_mask"]
            if "labels" in f:
                labels[b, sl] = f["labels"]
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention}
        if "labels" in features[0]:
            batch["labels"] = labels
        # Vision inputs come per example with a leading image dimension; concatenate in example order,
        # which is the order the model consumes image placeholders in.
        extra = {k for f in features for k in f if k not in ("input_ids", "attention_mask", "labels", "n_loss_tokens")}
        for k in sorted(extra & set(TOKEN_ALIGNED)):
            batch[k] = torch.zeros((B, T), dtype=torch.long)
            for b, f in enumerate(features):
                n = len(f[k])
                batch[k][b, slice(0, n) if self.padding_side == "right" else slice(T - n, T)] = f[k]
        for k in sorted(extra - set(TOKEN_ALIGNED)):
            tensors = [f[k] for f in features if k in f]
            batch[k] = torch.cat(tensors, dim=0)
        return batch


class EncodedDataset(torch.utils.data.Dataset):
    """Examples encoded once up front, so bad records fail before training starts."""

    def __init__(self, processor: Processor, examples: list[Example], settings: EncodeSettings):
        from vlmtune.logs import progress_bar

        self.items = [encode_example(processor, ex, settings) for ex in progress_bar(examples, desc="encode")]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(it["input_ids"]) for it in self.items]

    @property
    def loss_tokens(self) -> int:
        return sum(it["n_loss_tokens"] for it in self.items)


def padding_fraction(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Share of the tokens in right-padded batches (taken in `order`) that are padding."""
    pad = total = 0
    for s in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[s : s + batch_size]]
        pad += max(batch) * len(batch) - sum(batch)
        total += max(batch) * len(batch)
    return pad / total if total else 0.0
