"""Training invariants on a micro LLaVA: LoRA changes only LoRA weights, same seed = same result, resume is exact."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from tests.helpers import StopAtStep
from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.models.load import ModelRef
from vlmtune.train.trainer import attach_lora, train


def _cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=1,
        max_steps=6,
        batch_size=4,
        lr=5e-3,
        logging_steps=1,
        save_steps=3,
        report_to=[],
        lora_dropout=0.1,
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


def test_a_step_changes_lora_weights_and_only_them(micro_model_dir, count_data):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmtune.train.collate import Collator, EncodeSettings, encode_example

    proc = AutoProcessor.from_pretrained(micro_model_dir)
    model = attach_lora(AutoModelForImageTextToText.from_pretrained(micro_model_dir), _cfg())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)  # default target: the language model
    batch = Collator(proc.tokenizer.pad_token_id)([encode_example(proc, ex, EncodeSettings()) for ex in count_data[:4]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(**batch).loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "no parameter changed after an optimizer step"
    assert changed <= trainable, sorted(changed - trainable)[:5]
    # lora_B starts at zero, so after one step every lora_B has moved away from it.
    assert any("lora_B" in n for n in changed)


def test_lora_targets_follow_the_switches(micro_model_dir):
    from transformers import AutoModelForImageTextToText

    from vlmtune.models.load import lora_target_modules

    model = AutoModelForImageTextToText.from_pretrained(micro_model_dir)
    lang = lora_target_modules(model, "language", "attention")
    assert lang and all(n.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in lang)
    assert not any("vision" in n or "projector" in n for n in lang)
    proj = lora_target_modules(model, "language+projector", "attention+mlp")
    assert any("multi_modal_projector" in n for n in proj)
    every = lora_target_modules(model, "all", "attention+mlp")
    assert any("vision_tower" in n for n in every)


def _adapter(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_same_seed_same_adapter_and_resume_is_exact(micro_model_dir, count_data, tmp_path):
    train_ex, val_ex = count_data[:24], count_data[24:28]
    full = train(ModelRef.of(ModelConfig(name=str(micro_model_dir))), train_ex, val_ex, tmp_path / "full", _cfg())
    again = train(ModelRef.of(ModelConfig(name=str(micro_model_dir))), train_ex, val_ex, tmp_path / "again", _cfg())
    a, b = _adapter(full.output_dir), _adapter(again.output_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Interrupted after step 3 (its checkpoint is written), then resumed with --resume.
    cut = train(
        ModelRef.of(ModelConfig(name=str(micro_model_dir))),
        train_ex,
        val_ex,
        tmp_path / "cut",
        _cfg(),
        callbacks=[StopAtStep(3)],
    )
    assert cut.steps == 3
    after_three = _adapter(cut.output_dir)
    # The first 3 steps moved the adapter away from where the full run ended (it really was interrupted).
    assert any(not torch.equal(a[k], after_three[k]) for k in a)
    resumed = train(
        ModelRef.of(ModelConfig(name=str(micro_model_dir))), train_ex, val_ex, tmp_path / "cut", _cfg(), resume=True
    )
    assert resumed.steps == 6
    c = _adapter(resumed.output_dir)
    diffs = {k: float((a[k] - c[k]).abs().max()) for k in a}
    assert max(diffs.values()) < 1e-6, diffs
    losses = [h["loss"] for h in full.history if "loss" in h]
    assert losses and all(h.get("loss_tokens_per_batch", 1) > 0 for h in full.history if "loss" in h)
