"""The loss mask: prompt and image tokens excluded, assistant tokens (and the end-of-turn token) included."""

from __future__ import annotations

import pytest
import torch

from vlmtune.data.example import Example
from vlmtune.errors import DataError
from vlmtune.processing import image_token_id
from vlmtune.train.collate import IGNORE, Collator, EncodeSettings, encode_example


@pytest.fixture(scope="module")
def processor(micro_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(micro_model_dir)


def test_loss_only_on_the_answer(processor, count_data):
    ex = count_data[0]
    enc = encode_example(processor, ex, EncodeSettings())
    tok = processor.tokenizer
    ids, labels = enc["input_ids"], enc["labels"]
    kept = ids[labels != IGNORE]
    # Exactly the answer plus the end-of-turn marker (and the template's newline) carry loss.
    assert tok.decode(kept, skip_special_tokens=False).strip() == f"{ex.answer_text()}<|end|>", tok.decode(kept)
    img = image_token_id(processor)
    n_img = int((ids == img).sum())
    from tests.conftest import MICRO
    from vlmtune.models.tiny import TinyBaseConfig

    cfg = TinyBaseConfig(**MICRO)
    assert n_img == (cfg.image_size // cfg.patch_size) ** 2, n_img  # one token per patch, CLS dropped
    assert not bool((labels[ids == img] != IGNORE).any())
    # Every token of the prompt (user turn, question text, the assistant header) is masked.
    first_loss = int((labels != IGNORE).nonzero()[0])
    prompt = tok.decode(ids[:first_loss])
    assert ex.prompt_messages()[0]["content"].split("\n")[-1] in prompt and prompt.rstrip().endswith("<|assistant|>")


def test_loss_on_all_still_excludes_image_tokens(processor, count_data):
    enc = encode_example(processor, count_data[0], EncodeSettings(loss_on="all"))
    img = image_token_id(processor)
    ids, labels = enc["input_ids"], enc["labels"]
    assert bool((labels[ids != img] != IGNORE).all())
    assert not bool((labels[ids == img] != IGNORE).any())
    assert enc["n_loss_tokens"] == int((ids != img).sum())


def test_multi_turn_masks_every_assistant_turn(processor, count_data):
    ex = count_data[0]
    msgs = [
        ex.messages[0],
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Are you sure?"},
        {"role": "assistant", "content": "yes"},
    ]
    two = Example(id="mt", task="count", messages=msgs, images=ex.images, target=7)
    enc = encode_example(processor, two, EncodeSettings())
    text = processor.tokenizer.decode(enc["input_ids"][enc["labels"] != IGNORE])
    assert "7" in text and "yes" in text and "Are you sure" not in text


def test_truncating_image_tokens_is_an_error(processor, count_data):
    with pytest.raises(DataError, match="image tokens"):
        encode_example(processor, count_data[0], EncodeSettings(max_length=10))


def test_collator_pads_right_and_masks_padding(processor, count_data):
    feats = [encode_example(processor, ex, EncodeSettings()) for ex in count_data[:3]]
    batch = Collator(processor.tokenizer.pad_token_id)(feats)
    B, T = batch["input_ids"].shape
    assert B == 3 and batch["pixel_values"].shape == (3, 3, 64, 64)
    for b, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["attention_mask"][b, :n].all() and not batch["attention_mask"][b, n:].any()
        assert bool((batch["labels"][b, n:] == IGNORE).all())
        assert torch.equal(batch["labels"][b, :n], f["labels"])
