"""Option scoring: the shared-prefix scorer (prompt once, KV cache repeated per option batch) agrees with one full
forward per option, with the model's own loss, and across batch sizes; the end-of-turn token is scored."""

from __future__ import annotations

import pytest
import torch

from vlmtune.infer.score import score_options, score_options_full
from vlmtune.processing import load_image_cached, prompt_text, render

# VisDial-like candidates of different token lengths, a Korean one (multi-byte), and "2" vs "20".
OPTIONS = ["yes", "no, there are two", "2", "maybe", "두 개", "20", "I can't tell, the image is dark"]
TOL = 1e-4


@pytest.fixture(scope="module")
def model_and_processor(micro_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(micro_model_dir, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(micro_model_dir)


@pytest.fixture(scope="module")
def examples(count_data):
    return count_data[:4]


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(r) for r in a] == [len(r) for r in b], (a, b)
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _argmax(rows: list[list[float]]) -> list[int]:
    return [max(range(len(r)), key=r.__getitem__) for r in rows]


@pytest.mark.parametrize("packing", ["on", "off"])
def test_shared_prefix_equals_full_forward(model_and_processor, examples, packing):
    model, processor = model_and_processor
    opts = [OPTIONS] * len(examples)
    stats: dict = {}
    shared = score_options(model, processor, examples, opts, batch_size=3, stats=stats, packing=packing)
    assert stats["packed_examples"] == (len(examples) if packing == "on" else 0), stats
    full = score_options_full(model, processor, examples, opts)
    diff = _max_diff(shared, full)
    assert diff < TOL, f"max |shared - full| = {diff}\nshared={shared}\nfull={full}"
    assert _argmax(shared) == _argmax(full)
    assert stats["prefix_forwards"] == len(examples), stats  # the prompt ran once per example
    assert stats["fallback_options"] == 0, stats
    assert all(s < 0 for r in shared for s in r)
    assert all(r[2] != r[5] for r in shared), "'2' and '20' must differ (the end-of-turn token is scored)"


def test_batch_size_does_not_change_scores(model_and_processor, examples):
    model, processor = model_and_processor
    opts = [OPTIONS] * 2
    one = score_options(model, processor, examples[:2], opts, batch_size=1)
    many = score_options(model, processor, examples[:2], opts, batch_size=64)
    assert _max_diff(one, many) < TOL, (one, many)


def test_normalize_is_mean_per_token(model_and_processor, examples):
    model, processor = model_and_processor
    ex = examples[0]
    total = score_options(model, processor, [ex], [OPTIONS])[0]
    mean = score_options(model, processor, [ex], [OPTIONS], normalize=True)[0]
    mean_full = score_options_full(model, processor, [ex], [OPTIONS], normalize=True)[0]
    tok = processor.tokenizer
    for o, t, m, mf in zip(OPTIONS, total, mean, mean_full):
        n = len(tok(o, add_special_tokens=False)["input_ids"]) + 1  # + the end-of-turn token
        assert abs(m - t / n) < TOL, (o, t, m, n)
        assert abs(m - mf) < TOL, (o, m, mf)


def test_score_equals_model_loss_on_full_sequence(model_and_processor, examples):
    """Independent check: -loss * n_tokens from the model's own loss with labels on the answer span."""
    model, processor = model_and_processor
    ex = examples[1]
    scores = score_options(model, processor, [ex], [OPTIONS])[0]
    images = [load_image_cached(p) for p in ex.images]
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|end|>")
    n_prompt = processor(text=[prompt_text(processor, ex)], images=images, return_tensors="pt")["input_ids"].shape[1]
    for o, s in zip(OPTIONS, scores):
        full = render(
            processor, ex.prompt_messages() + [{"role": "assistant", "content": o}], add_generation_prompt=False
        )
        enc = processor(text=[full], images=images, return_tensors="pt")
        ids = enc["input_ids"][0]
        stop = n_prompt + ids[n_prompt:].tolist().index(end) + 1  # answer tokens + <|end|>, not the trailing "\n"
        labels = torch.full_like(enc["input_ids"], -100)
        labels[0, n_prompt:stop] = ids[n_prompt:stop]
        with torch.no_grad():
            loss = model(**enc, labels=labels).loss
        expected = -float(loss) * (stop - n_prompt)
        assert abs(s - expected) < TOL, (o, s, expected)


def test_boundary_merge_falls_back_to_full_forward(model_and_processor, examples):
    """A template whose generation prompt ends in "sq": the option "uares" merges with it ("s q" -> "s qu")."""
    import copy

    from vlmtune.models.tiny import CHAT_TEMPLATE

    model, processor = model_and_processor
    processor = copy.deepcopy(processor)
    processor.chat_template = CHAT_TEMPLATE.replace(
        "<|{{ message['role'] }}|>\n", "<|{{ message['role'] }}|>\nsq"
    ).replace("<|assistant|>\n{% endif %}", "<|assistant|>\nsq{% endif %}")
    tok, ex = processor.tokenizer, examples[0]
    prompt = prompt_text(processor, ex)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    f_ids = tok(prompt + "uares<|end|>", add_special_tokens=False)["input_ids"]
    assert f_ids[: len(p_ids)] != p_ids, "the test needs a merge across the boundary; the micro tokenizer changed?"
    opts = [["yes", "uares", "2"]]
    stats: dict = {}
    with pytest.warns(UserWarning, match="full forward"):
        shared = score_options(model, processor, [ex], opts, stats=stats)
    assert stats["fallback_options"] == 1, stats
    assert _max_diff(shared, score_options_full(model, processor, [ex], opts)) < TOL


def test_options_default_to_example_options(model_and_processor, examples):
    from dataclasses import replace

    from vlmtune.errors import DataError

    model, processor = model_and_processor
    ex = replace(examples[0], options=[0, 1, 2, 3])
    assert (
        _max_diff(score_options(model, processor, [ex]), score_options(model, processor, [ex], [["0", "1", "2", "3"]]))
        == 0
    )
    with pytest.raises(DataError, match="options"):
        score_options(model, processor, [replace(ex, options=None)])


def test_packing_splits_long_option_lists(model_and_processor, examples, monkeypatch):
    import vlmtune.infer.score as score_mod

    model, processor = model_and_processor
    opts = [OPTIONS] * 2
    whole = score_options(model, processor, examples[:2], opts, packing="on")
    monkeypatch.setattr(score_mod, "PACK_MAX_TOKENS", 3)  # a few options per packed forward
    stats: dict = {}
    split = score_options(model, processor, examples[:2], opts, packing="on", stats=stats)
    assert stats["option_forwards"] > 2 and _max_diff(whole, split) < TOL


@pytest.mark.parametrize("family", ["llava", "llava_next", "gemma3", "idefics3", "llama", "gemma3_text"])
def test_packed_scores_equal_full_forwards_for_each_family(family, tmp_path_factory):
    """Every family whose forward takes a 4-D mask: packed options score as one full forward each."""
    from vlmtune.config import ModelConfig
    from vlmtune.data.example import Example, load_jsonl
    from vlmtune.data.synth import synthesize
    from vlmtune.models.families import build_standin, get
    from vlmtune.models.load import load_model

    model, processor = load_model(ModelConfig(name=str(build_standin(family, tmp_path_factory.mktemp(family)))))
    if get(family).text_only:
        exs = [Example(id="t", task="count", messages=[{"role": "user", "content": "How many red shapes are there?"}])]
    else:
        exs = load_jsonl(synthesize("count", 2, tmp_path_factory.mktemp(f"{family}-data"), seed=3))
    opts = [OPTIONS] * len(exs)
    stats: dict = {}
    packed = score_options(model, processor, exs, opts, packing="on", stats=stats)
    assert stats["packed_examples"] == len(exs)
    assert _max_diff(packed, score_options_full(model, processor, exs, opts)) < TOL
