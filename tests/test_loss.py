"""Answer-only logits equal the full computation: same loss and same LoRA gradients, for every model family.

Tolerance: relative 1e-5 on the loss and 1e-4 on each gradient tensor (float32 on CPU; the two computations
differ only in summation order)."""

from __future__ import annotations

import pytest
import torch

from tests.test_families import _params, examples_for, family_examples, standin, standin_root  # noqa: F401
from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.data.example import Example
from vlmtune.models.families import names
from vlmtune.models.load import load_model
from vlmtune.processing import tokenizer_of
from vlmtune.train.collate import Collator, EncodeSettings, encode_example
from vlmtune.train.loss import answer_only_loss, post_process
from vlmtune.train.trainer import attach_lora

RTOL_LOSS, RTOL_GRAD = 1e-5, 1e-4


def _lengthen(examples: list[Example]) -> list[Example]:
    """The same examples with prompts of different lengths (so the batch is padded) and a longer answer."""
    out = []
    for i, ex in enumerate(examples[:3]):
        msgs = [dict(m) for m in ex.messages]
        msgs[0]["content"] += " Count carefully." * i
        msgs[-1]["content"] = msgs[-1]["content"] + " shapes" * i
        out.append(Example(id=ex.id, task=ex.task, messages=msgs, images=ex.images, target=ex.target))
    return out


def _model(family, root, softcap: float | None = None):
    model, proc = load_model(ModelConfig(name=str(standin(family, root))))
    if softcap is not None:  # exercise the family's logit post-processing
        model.config.get_text_config().final_logit_softcapping = softcap  # what each family's forward reads
    model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target="language+projector"))
    model.train()
    return model, proc


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _full_loss(model, batch, num_items):
    """transformers' own loss (float32 logits at every position, shifted, summed / num_items or mean)."""
    kw = {"num_items_in_batch": num_items} if num_items is not None else {}
    return model(**batch, **kw).loss


@pytest.mark.parametrize("loss_on", ["assistant", "all"])
@pytest.mark.parametrize("family", _params(names()))
def test_answer_only_loss_and_gradients_equal_the_full_computation(family, loss_on, standin_root, family_examples):
    model, proc = _model(family, standin_root)
    exs = _lengthen(examples_for(family, family_examples))
    batch = Collator(tokenizer_of(proc).pad_token_id)(
        [encode_example(proc, ex, EncodeSettings(loss_on=loss_on)) for ex in exs]
    )
    n_loss = int((batch["labels"][:, 1:] != -100).sum())
    assert n_loss > len(exs)  # several answer tokens per example
    for num_items in (None, torch.tensor(n_loss + 7)):  # mean, and a gradient-accumulation denominator
        model.zero_grad()
        full = _full_loss(model, batch, num_items)
        full.backward()
        g_full = _grads(model)
        model.zero_grad()
        ours, n = answer_only_loss(model, batch, num_items)
        ours.backward()
        g_ours = _grads(model)
        assert n == n_loss
        torch.testing.assert_close(ours, full, rtol=RTOL_LOSS, atol=1e-7)
        assert g_full.keys() == g_ours.keys() and g_full
        for name in g_full:
            torch.testing.assert_close(g_ours[name], g_full[name], rtol=RTOL_GRAD, atol=1e-7, msg=name)


@pytest.mark.parametrize("family", ["gemma3_text", "gemma3"])
def test_soft_capped_logits_are_post_processed_like_the_model_does(family, standin_root, family_examples):
    model, proc = _model(family, standin_root, softcap=0.05)  # tiny cap: saturates every logit
    exs = _lengthen(examples_for(family, family_examples))
    batch = Collator(tokenizer_of(proc).pad_token_id)([encode_example(proc, ex, EncodeSettings()) for ex in exs])
    ours, _ = answer_only_loss(model, batch)
    torch.testing.assert_close(ours, _full_loss(model, batch, None), rtol=RTOL_LOSS, atol=1e-7)
    if family == "gemma3_text":  # the cap really changes this family's loss, so skipping it would be caught
        model.config.final_logit_softcapping = None
        assert abs(float(_full_loss(model, batch, None)) - float(ours)) > 1e-2


def test_post_process_follows_the_config():
    class Cfg:
        final_logit_softcapping = 3.0

    x = torch.tensor([[-30.0, 0.0, 30.0]])
    assert torch.allclose(post_process(Cfg(), x), torch.tanh(x / 3) * 3)
    assert post_process(object(), x) is x


def test_chunks_give_the_same_loss(monkeypatch, standin_root, family_examples):
    import vlmtune.train.loss as loss_mod

    model, proc = _model("llama", standin_root)
    exs = _lengthen(examples_for("llama", family_examples))
    batch = Collator(tokenizer_of(proc).pad_token_id)(
        [encode_example(proc, ex, EncodeSettings(loss_on="all")) for ex in exs]
    )
    whole, _ = answer_only_loss(model, batch)
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", model.config.vocab_size * 3)  # 3 tokens per chunk
    model.zero_grad()
    chunked, _ = answer_only_loss(model, batch)
    chunked.backward()
    g_chunked = _grads(model)
    model.zero_grad()
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 1 << 25)
    whole, _ = answer_only_loss(model, batch)
    whole.backward()
    torch.testing.assert_close(chunked, whole, rtol=RTOL_LOSS, atol=1e-7)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g_chunked[name], g, rtol=RTOL_GRAD, atol=1e-7, msg=name)
