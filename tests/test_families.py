"""Every supported model family, through tiny random-weight stand-ins of the real architecture classes.

Per family: Auto-class loading, the family's chat-template turn syntax, the assistant-only loss mask,
a LoRA step that moves only LoRA weights, batched left-padded generation, and adapter save -> load ->
merge giving the same logits, 4-bit / 8-bit loading (bitsandbytes on CPU) with a LoRA optimizer step, and one
BOS in training, generation and option scoring.
Qwen2.5-VL's cases need torchvision (its processor requires a video processor) and skip without it.
"""

from __future__ import annotations

import pytest
import torch

from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.data.example import Example
from vlmtune.errors import ConfigError
from vlmtune.models.families import build_standin, end_of_turn_token, family_of, names, text_only_families
from vlmtune.models.load import load_model
from vlmtune.train.collate import IGNORE, Collator, EncodeSettings, encode_example

STANDIN_FAMILIES = names()
TEXT_ONLY = text_only_families()
VLM_FAMILIES = [f for f in STANDIN_FAMILIES if f not in TEXT_ONLY]
CLASSES = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor"),
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
    "llama": ("LlamaForCausalLM", None),
    "gemma3_text": ("Gemma3ForCausalLM", None),
}


def _params(fams):
    # Qwen2.5-VL's processor cannot be built without its video processor, which needs torchvision.
    from vlmtune.models.families import torchvision_problem

    problem = torchvision_problem()
    need_tv = pytest.mark.skipif(problem is not None, reason=f"qwen2_5_vl processor needs torchvision ({problem})")
    return [pytest.param(f, marks=need_tv) if f == "qwen2_5_vl" else f for f in fams]


@pytest.fixture(scope="session")
def standin_root(tmp_path_factory):
    return tmp_path_factory.mktemp("standins")


@pytest.fixture(scope="session")
def family_examples(tmp_path_factory):
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize

    vlm = load_jsonl(synthesize("count", 4, tmp_path_factory.mktemp("fam-count"), seed=1))
    text = [
        Example(
            id=f"t{i}",
            task="count",
            messages=[
                {"role": "user", "content": f"How many {c} shapes are there?"},
                {"role": "assistant", "content": str(i + 1)},
            ],
        )
        for i, c in enumerate(["red", "green", "blue", "yellow"])
    ]
    return {"vlm": vlm, "text": text}


_BUILT: dict[str, object] = {}


def standin(family, root):
    """Build each family's stand-in once per session."""
    if family not in _BUILT:
        _BUILT[family] = build_standin(family, root / family)
    return _BUILT[family]


def examples_for(family, family_examples):
    return family_examples["text" if family in TEXT_ONLY else "vlm"]


def expected_render(family, ex):
    q, a = ex.messages[0]["content"].split("\n")[-1], ex.messages[1]["content"]
    return {
        "llava": f"USER: <image>\n{q} ASSISTANT: {a}</s>",
        "llava_next": f"USER: <image>\n{q} ASSISTANT: {a}</s>",
        "gemma3": f"<bos><start_of_turn>user\n<start_of_image>{q}<end_of_turn>\n<start_of_turn>model\n{a}<end_of_turn>\n",
        "qwen2_5_vl": (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
        ),
        "idefics3": f"<|begin_of_text|>User:<image>{q}<end_of_utterance>\nAssistant: {a}<end_of_utterance>\n",
        "llama": (
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            f"{q}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{a}<|eot_id|>"
        ),
        "gemma3_text": f"<bos><start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n{a}<end_of_turn>\n",
    }[family]


def _batch(proc, examples):
    tok = getattr(proc, "tokenizer", proc)
    return Collator(tok.pad_token_id)([encode_example(proc, ex, EncodeSettings()) for ex in examples])


def _image_token_id(model):
    c = model.config
    return getattr(c, "image_token_id", None) or getattr(c, "image_token_index", None)


def test_family_of_maps_hub_ids_and_model_types():
    assert family_of("llava-hf/llava-1.5-7b-hf") == "llava"
    assert family_of("llava-hf/llava-v1.6-mistral-7b-hf") == "llava_next"
    assert family_of("llava_next") == "llava_next"
    assert family_of("google/gemma-3-4b-it") == "gemma3"
    assert family_of("Qwen/Qwen2.5-VL-3B-Instruct") == "qwen2_5_vl"
    assert family_of("HuggingFaceM4/Idefics3-8B-Llama3") == "idefics3"
    assert family_of("meta-llama/Llama-3.2-1B") == "llama"
    assert family_of("gemma3-270m") == family_of("google/gemma-3-1b-it") == family_of("gemma3_text") == "gemma3_text"
    assert family_of("google/gemma-3-12b-it") == "gemma3"
    with pytest.raises(ConfigError, match="known families"):
        family_of("bert-base-uncased")
    with pytest.raises(ConfigError, match="(?i)did you mean 'llava'"):
        build_standin("lava", "/nonexistent")


@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_load_render_and_loss_mask(family, standin_root, family_examples):
    from vlmtune.processing import render

    path = standin(family, standin_root)
    model, proc = load_model(ModelConfig(name=str(path)))
    arch, proc_cls = CLASSES[family]
    assert type(model).__name__ == arch
    if proc_cls:
        assert type(proc).__name__ == proc_cls
    assert family_of(model.config) == family
    tok = getattr(proc, "tokenizer", proc)
    for ex in examples_for(family, family_examples):
        text = render(proc, ex.messages, add_generation_prompt=False)
        assert text == expected_render(family, ex), text
        enc = encode_example(proc, ex, EncodeSettings())
        ids, labels = enc["input_ids"], enc["labels"]
        labelled = tok.decode(ids[labels != IGNORE])
        # exactly the answer and the turn's end token (templates may put a newline after it)
        assert labelled.strip() == ex.answer_text() + end_of_turn_token(family), (family, labelled)
        # the labelled span is contiguous and is the tail of the sequence (up to a trailing newline)
        pos = (labels != IGNORE).nonzero().flatten()
        assert pos.tolist() == list(range(int(pos[0]), int(pos[-1]) + 1)), pos
        img = _image_token_id(model)
        if family not in TEXT_ONLY:
            assert int((ids == img).sum()) > 0, f"{family}: no image tokens in the expanded prompt"
            assert not bool((labels[ids == img] != IGNORE).any()), "image tokens carry loss"


@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_lora_step_moves_only_lora_and_generate(family, standin_root, family_examples):
    from vlmtune.infer.generate import generate
    from vlmtune.train.trainer import attach_lora

    examples = examples_for(family, family_examples)
    model, proc = load_model(ModelConfig(name=str(standin(family, standin_root))))
    texts = generate(model, proc, examples[:2], batch_size=2, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts), texts

    torch.manual_seed(0)
    model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    loss = model(**_batch(proc, examples[:2])).loss
    assert torch.isfinite(loss), loss
    loss.backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed and all("lora_" in n for n in changed), [n for n in changed if "lora_" not in n][:5]
    assert any("lora_B" in n for n in changed), changed[:5]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_half_precision_load_loss_and_generate_on_cpu(family, dtype, standin_root, family_examples):
    from vlmtune.infer.generate import generate

    examples = examples_for(family, family_examples)
    model, proc = load_model(ModelConfig(name=str(standin(family, standin_root)), dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    with torch.no_grad():
        loss = model(**_batch(proc, examples[:2])).loss
    assert torch.isfinite(loss), (family, dtype, loss)
    texts = generate(model, proc, examples[:2], batch_size=2, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def _part(name: str) -> str:
    if any(k in name for k in ("multi_modal_projector", ".merger.", ".connector.")):
        return "projector"
    if any(k in name for k in ("vision_tower", "vision_model", "visual.")):
        return "vision"
    return "language"


@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_lora_switches_train_the_parts_they_name(family, standin_root, family_examples, tmp_path):
    """train.lora_target: language | language+projector | all, checked by what one step changes, per family.
    Gemma-3's projector has no linear layers, so it is trained in full (modules_to_save) and must still move."""
    from vlmtune.train.trainer import attach_lora

    examples = examples_for(family, family_examples)
    expect = {
        "language": {"language"},
        "language+projector": {"language", "projector"},
        "all": {"language", "projector", "vision"},
    }
    for target, parts in expect.items():
        if family in TEXT_ONLY:
            parts = {"language"}
        model, proc = load_model(ModelConfig(name=str(standin(family, standin_root))))
        torch.manual_seed(0)
        model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target=target))
        model.train()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
        model(**_batch(proc, examples[:2])).loss.backward()
        opt.step()
        changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
        assert {_part(n) for n in changed} == parts, (target, sorted({(_part(n), n) for n in changed})[:8])
        assert all("lora_" in n or "modules_to_save" in n for n in changed), changed[:5]
        if target == "all":  # what was trained is what the adapter holds: reloaded, the outputs are the same
            model.eval()
            batch = _batch(proc, examples[:2])
            batch.pop("labels")
            with torch.no_grad():
                want = model(**batch).logits
            model.save_pretrained(tmp_path / "adapter")
            reloaded, _ = load_model(
                ModelConfig(name=str(standin(family, standin_root))), adapter=str(tmp_path / "adapter")
            )
            with torch.no_grad():
                assert torch.allclose(reloaded(**batch).logits, want, atol=1e-4)
                merged = reloaded.merge_and_unload()  # what `vlmtune export --merge` saves
                assert torch.allclose(merged(**batch).logits, want, atol=1e-4)


@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_adapter_save_load_merge_round_trip(family, standin_root, family_examples, tmp_path):
    from vlmtune.models.merge import merge_adapter
    from vlmtune.train.trainer import attach_lora

    base = standin(family, standin_root)
    examples = examples_for(family, family_examples)
    model, proc = load_model(ModelConfig(name=str(base)))
    batch = _batch(proc, examples[:2])
    batch.pop("labels")
    with torch.no_grad():
        base_logits = model(**batch).logits
    torch.manual_seed(0)
    model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():  # a non-zero delta (lora_B starts at zero), so the merge has something to fold in
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    model.eval()
    with torch.no_grad():
        lora_logits = model(**batch).logits
    assert not torch.allclose(lora_logits, base_logits, atol=1e-3), "the adapter did not change the output"
    model.save_pretrained(tmp_path / "adapter")

    reloaded, _ = load_model(ModelConfig(name=str(base)), adapter=str(tmp_path / "adapter"))
    out = merge_adapter(base, tmp_path / "adapter", tmp_path / "merged")
    merged, mproc = load_model(ModelConfig(name=str(out)))
    assert type(merged).__name__ == CLASSES[family][0]
    assert "adapter" in (out / "README.md").read_text()
    assert not (out / "adapter_config.json").exists()
    with torch.no_grad():
        for name, m in (("reloaded adapter", reloaded), ("merged", merged)):
            got = m(**batch).logits
            assert torch.allclose(got, lora_logits, atol=1e-4), (name, float((got - lora_logits).abs().max()))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_quantized_load_lora_and_generate_on_cpu(family, bits, standin_root, family_examples):
    """QLoRA (4-bit nf4, double quantization) and LLM.int8 (8-bit), both through bitsandbytes' CPU backend:
    loading, generation, and one LoRA optimizer step that changes the LoRA weights (only them) and lowers the loss."""
    pytest.importorskip("bitsandbytes")
    from vlmtune.infer.generate import generate
    from vlmtune.models.load import VISION_PARTS
    from vlmtune.train.trainer import attach_lora

    examples = examples_for(family, family_examples)
    cfg = ModelConfig(name=str(standin(family, standin_root)), load_in_4bit=bits == 4, load_in_8bit=bits == 8)
    model, proc = load_model(cfg)
    qclass = "Linear4bit" if bits == 4 else "Linear8bitLt"
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert any(k == qclass for n, k in kinds.items() if "layers." in n and "vision" not in n), family
    # Vision towers and projectors stay in full precision, as QLoRA recipes for VLMs do.
    assert not any(k == qclass for n, k in kinds.items() if any(v in n for v in VISION_PARTS))
    if bits == 4:
        q = model.config.quantization_config
        assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant, q
    assert len(generate(model, proc, examples[:2], batch_size=2, max_new_tokens=3)) == 2
    torch.manual_seed(0)
    model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    model.train()
    batch = _batch(proc, examples[:2])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    loss = model(**batch).loss
    assert torch.isfinite(loss), loss
    loss.backward()
    opt.step()  # a real optimizer step on the quantized base, as train() takes
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed and all("lora_" in n for n in changed), [n for n in changed if "lora_" not in n][:5]
    assert any("lora_B" in n for n in changed), changed[:5]
    with torch.no_grad():
        after = model(**batch).loss
    # The step moved the loss on the batch it was taken on, downhill (no dropout: the same function both times).
    assert float(after) < float(loss), (family, bits, float(loss), float(after))


class InputRecorder:
    """Records the token ids of every forward call of a model (a pre-hook on the real model, nothing replaced)."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            # generate() passes its cache as `cache`, option scoring as `past_key_values`; the prompt's forward
            # starts from an empty (or no) cache, the later ones continue after it.
            cache = kwargs.get("past_key_values", kwargs.get("cache"))
            mask = kwargs.get("attention_mask")
            self.calls.append(
                {
                    "ids": ids.detach().cpu(),
                    "cached": cache is not None and cache.get_seq_length() > 0,
                    "mask": mask.detach().cpu() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None,
                }
            )

    def close(self):
        self._handle.remove()


def _bos_rows(ids: torch.Tensor, mask: torch.Tensor | None, bos: int, pad: int | None) -> list[tuple[int, bool]]:
    """Per row: (number of BOS tokens, whether the first real token is the BOS); padding (by the attention mask, or
    leading pad tokens where the call has no 2-D mask) is left out."""
    out = []
    for b in range(ids.shape[0]):
        real = ids[b] if mask is None else ids[b][mask[b].bool()]
        if mask is None and pad is not None and pad != bos:
            keep = (real != pad).nonzero()
            real = real[int(keep[0]) :] if len(keep) else real[:0]
        out.append((int((real == bos).sum()), bool(len(real)) and int(real[0]) == bos))
    return out


@pytest.mark.parametrize("family", _params(STANDIN_FAMILIES))
def test_one_bos_in_training_generation_and_option_scoring(family, standin_root, family_examples):
    """Hub tokenizers add a BOS (Llama-3, Gemma-3, LLaVA's Llama-2 tokenizer) and the Llama-3 / Gemma-3 /
    Idefics3 templates write one too. Every sequence the model is given must start with exactly one: the
    training batch, the prompt of each generation batch (left padded), and the prompt of option scoring,
    packed and batched (packing="off"), with no BOS inside the option tokens fed after the cached prompt."""
    from vlmtune.infer.generate import generate
    from vlmtune.infer.score import score_options

    model, proc = load_model(ModelConfig(name=str(standin(family, standin_root))))
    tok = getattr(proc, "tokenizer", proc)
    if tok.bos_token is None:  # Qwen2.5-VL: no BOS token at all; nothing may invent one
        assert tok("x")["input_ids"] == tok("x", add_special_tokens=False)["input_ids"]
        return
    bos, pad = tok.bos_token_id, tok.pad_token_id
    tok.add_bos_token = True  # as the hub tokenizers do
    try:
        assert tok("x")["input_ids"][0] == bos
        examples = examples_for(family, family_examples)[:3]
        # Training: the collated batch the Trainer feeds the model.
        batch = _batch(proc, examples)
        assert _bos_rows(batch["input_ids"], batch["attention_mask"], bos, pad) == [(1, True)] * len(examples), family
        # Generation and option scoring: what actually reaches the model's forward.
        rec = InputRecorder(model)
        try:
            generate(model, proc, examples, batch_size=3, max_new_tokens=2)
            prompts = [c for c in rec.calls if not c["cached"]]
            assert len(prompts) == 1 and prompts[0]["ids"].shape[0] == 3, [c["ids"].shape for c in rec.calls]
            assert _bos_rows(prompts[0]["ids"], prompts[0]["mask"], bos, pad) == [(1, True)] * 3, (family, "generate")
            assert all(int((c["ids"] == bos).sum()) == 0 for c in rec.calls if c["cached"]), "BOS generated"
            options = [["1", "2", "three"]] * len(examples)
            for packing in ("auto", "off"):
                rec.calls.clear()
                stats: dict = {}
                score_options(model, proc, examples, options, packing=packing, batch_size=2, stats=stats)
                prefixes = [c for c in rec.calls if not c["cached"]]
                fed = [c for c in rec.calls if c["cached"]]
                # One prefix forward per example (plus full forwards for any option merged across the boundary).
                assert len(prefixes) == len(examples) + stats["fallback_options"], (packing, len(prefixes))
                for c in prefixes:
                    assert _bos_rows(c["ids"], None, bos, None) == [(1, True)], (family, packing, c["ids"][0, :4])
                assert fed and all(int((c["ids"] == bos).sum()) == 0 for c in fed), (family, packing)
                if packing == "off":
                    assert stats["packed_examples"] == 0
        finally:
            rec.close()
    finally:
        tok.add_bos_token = False
    # A template without a BOS keeps the tokenizer's own; one that writes it turns the tokenizer's off.
    from vlmtune.processing import special_tokens_kw

    assert special_tokens_kw(proc, ["USER: hi"]) == {}
    assert special_tokens_kw(proc, [tok.bos_token + "hi"]) == {"add_special_tokens": False}
