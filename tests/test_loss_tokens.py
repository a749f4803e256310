"""The loss-token count that training logs (`loss_tokens_per_batch`) equals a count made by hand.

The hand count does not use the loss mask: the micro model's chat template writes an assistant turn as
`<answer><|end|>\n` after the generation prompt, so an example's loss tokens are the tokens of that text. Answers
of different lengths make the batches padded, so counting padding, prompt or image positions would show.
"""

from __future__ import annotations

import dataclasses

from transformers import AutoTokenizer

from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.models.load import ModelRef
from vlmtune.train.trainer import train

ANSWERS = ["3", "there are 3", "I count two red shapes in this picture", "none at all, zero"]


def _with_answer(ex, answer):
    return dataclasses.replace(ex, messages=ex.messages[:-1] + [{"role": "assistant", "content": answer}])


def test_logged_loss_tokens_equal_a_hand_count(micro_model_dir, count_data, tmp_path, log_lines):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    examples = [_with_answer(ex, a) for ex, a in zip(count_data[:4], ANSWERS)]
    per_example = [len(tok(f"{a}<|end|>\n", add_special_tokens=False)["input_ids"]) for a in ANSWERS]
    assert len(set(per_example)) == len(ANSWERS), per_example  # different lengths: the batch is padded
    hand = sum(per_example)
    # One batch holds all four examples, so every step's count is the whole hand count.
    cfg = TrainConfig(epochs=1, max_steps=3, batch_size=4, logging_steps=1, lr=1e-3, report_to=[], seed=0)
    result = train(ModelRef.of(ModelConfig(name=str(micro_model_dir))), examples, [], tmp_path / "out", cfg)
    logged = [h["loss_tokens_per_batch"] for h in result.history if "loss" in h]
    assert logged == [hand] * 3, (logged, per_example)
    assert result.train_loss_tokens == hand
    assert any(f"4 train examples, {hand} loss tokens" in m for m in log_lines), list(log_lines)


def test_loss_on_all_counts_every_real_token_but_images(micro_model_dir, count_data, tmp_path):
    """train.loss_on=all: prompt and answer tokens count; image placeholders and padding still do not."""
    from transformers import AutoProcessor

    from vlmtune.processing import encode_texts, load_image, render

    proc = AutoProcessor.from_pretrained(micro_model_dir)
    examples = [_with_answer(ex, a) for ex, a in zip(count_data[:4], ANSWERS)]
    hand = 0
    for ex in examples:
        text = render(proc, ex.messages, add_generation_prompt=False)
        n_images = text.count("<image>")
        # The processor expands each <image> into the model's image tokens; none of them carry loss.
        ids = encode_texts(proc, [text], [[load_image(p) for p in ex.images]])["input_ids"][0]
        image_tokens = len(ids) - len(
            proc.tokenizer(text.replace("<image>", ""), add_special_tokens=False)["input_ids"]
        )
        assert image_tokens > n_images  # expanded: more tokens than placeholders
        hand += len(ids) - image_tokens
    cfg = TrainConfig(
        epochs=1, max_steps=1, batch_size=4, logging_steps=1, lr=1e-3, report_to=[], seed=0, loss_on="all"
    )
    result = train(ModelRef.of(ModelConfig(name=str(micro_model_dir))), examples, [], tmp_path / "out", cfg)
    assert [h["loss_tokens_per_batch"] for h in result.history if "loss" in h] == [hand]
