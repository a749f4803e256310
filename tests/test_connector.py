"""The memory connector: stored embeddings -> soft tokens of a frozen LM, trained through the Trainer path."""

from __future__ import annotations

import json

import pytest
import torch

from vlmtune.config import ConnectorConfig, EvalConfig, ModelConfig, TrainConfig
from vlmtune.errors import ConfigError, DataError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
ENCODERS = dict(image_encoder="pixels", text_encoder="hashing:256")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("VLMTUNE_CACHE")
    os.environ["VLMTUNE_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("VLMTUNE_CACHE")
    else:
        os.environ["VLMTUNE_CACHE"] = old


@pytest.fixture(scope="module")
def dialog(tmp_path_factory):
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize

    return load_jsonl(synthesize("dialog", 12, tmp_path_factory.mktemp("dialog"), seed=3))


@pytest.fixture(scope="module")
def trained(micro_model_dir, dialog, cache, tmp_path_factory):
    """One training run of a connector on the micro LLaVA (3 steps), with what the model was before and after."""
    from transformers import TrainerCallback

    from vlmtune.memory.connector import prepare_run
    from vlmtune.models.load import ModelRef
    from vlmtune.train.trainer import train

    class Cfg:
        connector = ConnectorConfig(enabled=True, max_turns=11, **ENCODERS)

    ref = ModelRef.of(ModelConfig(name=str(micro_model_dir), device="cpu"))
    conn = prepare_run(Cfg, {"train": dialog[:8], "val": [], "test": dialog[8:]}, ref)
    seen = {}

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen["model"] = model
            seen["before"] = {k: v.detach().clone() for k, v in super(type(model), model).state_dict().items()}

        def on_train_end(self, args, state, control, model=None, **kw):
            seen["after"] = {k: v.detach().clone() for k, v in super(type(model), model).state_dict().items()}

    out = tmp_path_factory.mktemp("run")
    tcfg = TrainConfig(max_steps=3, batch_size=4, lr=1e-2, logging_steps=1, report_to=[], warmup_ratio=0.0)
    result = train(ref, conn.soft["train"], [], out, tcfg, connector=conn.setup, callbacks=[Watch()])
    return {"ref": ref, "conn": conn, "result": result, **seen}


def test_only_the_connector_changes(trained):
    before, after = trained["before"], trained["after"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the training step changed nothing"
    assert all(k.startswith("connector.") for k in changed), sorted(changed)[:5]
    assert {"connector.fusion.weight", "connector.position.weight", "connector.out.weight"} <= changed
    lm = [k for k in before if k.startswith("lm.")]
    assert lm and all(torch.equal(before[k], after[k]) for k in lm)
    assert trained["result"].trainable_params == sum(p.numel() for p in trained["model"].connector.parameters())


def test_saved_like_an_adapter(trained):
    folder = trained["result"].output_dir
    assert folder.name == "connector"
    meta = json.loads((folder / "connector.json").read_text())
    assert meta["lm"]["name"] == trained["ref"].name and meta["lm"]["hash"]
    assert meta["encoders"]["image"]["name"] == "pixels" and meta["encoders"]["text"]["name"] == "hashing"
    assert meta["config"]["position"] is True and meta["shape"]["image_dim"] == 192
    from safetensors.torch import load_file

    weights = load_file(str(folder / "connector.safetensors"))
    assert set(weights) == set(trained["model"].connector.state_dict())
    assert not list(folder.glob("*.bin")) and not list(folder.glob("model.safetensors"))


def test_reloaded_connector_reproduces_logits(trained):
    from vlmtune.memory.connector import load_for_eval
    from vlmtune.processing import encode_texts, example_inputs, prompt_text

    model, processor = load_for_eval(trained["ref"], trained["result"].output_dir)
    live = trained["model"].eval()
    examples = trained["conn"].soft["test"]
    texts = [prompt_text(processor, ex) for ex in examples[:3]]
    tok = processor.tokenizer
    tok.padding_side = "left"
    enc = {**encode_texts(processor, texts, None, padding=True), **example_inputs(processor, examples[:3])}
    assert int((enc["input_ids"] == model.token_id).sum()) > 0
    with torch.no_grad():
        a = live(**enc).logits
        b = model(**enc).logits
        plain = model.lm(input_ids=model.safe_ids(enc["input_ids"]), attention_mask=enc["attention_mask"]).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, plain, atol=1e-3)  # the soft tokens are used


def test_generation_and_option_scoring_use_the_memory(trained):
    from vlmtune.infer.generate import generate
    from vlmtune.infer.score import score_options, score_options_full
    from vlmtune.memory.connector import load_for_eval

    model, processor = load_for_eval(trained["ref"], trained["result"].output_dir)
    examples = trained["conn"].soft["test"][:2]
    texts = generate(model, processor, examples, batch_size=2, max_new_tokens=4)
    assert len(texts) == 2
    opts = [ex.options[:6] for ex in examples]
    fast = score_options(model, processor, examples, opts)
    full = score_options_full(model, processor, examples, opts)
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(full), rtol=1e-4, atol=1e-4)


def test_other_lm_or_encoders_are_clear_errors(trained, tmp_path):
    from vlmtune.memory.connector import features_for, load_for_eval
    from vlmtune.models.connector import check_fits, read_meta
    from vlmtune.models.load import ModelRef
    from vlmtune.models.tiny import TinyBaseConfig, save_untrained

    folder = trained["result"].output_dir
    other = save_untrained(
        TinyBaseConfig(vision_hidden=32, vision_layers=1, text_hidden=64, text_layers=1, heads=2, vocab_size=400),
        tmp_path / "other",
    )
    with pytest.raises(ConfigError, match="trained on LM"):
        load_for_eval(ModelRef.of(ModelConfig(name=str(other), device="cpu")), folder)
    with pytest.raises(ConfigError, match="trained with encoders"):
        load_for_eval(trained["ref"], folder, specs={"image": "pixels", "text": "minilm"})
    meta = read_meta(folder)
    wrong = {**meta["encoders"], "text": {**meta["encoders"]["text"], "dim": 512}}
    with pytest.raises(ConfigError, match="text embeddings"):
        check_fits(meta, lm_name="x", lm_hash=meta["lm"]["hash"], encoders=wrong, folder=folder)
    with pytest.raises(ConfigError, match="no stored image embeddings"):
        features_for({**meta, "specs": {**meta["specs"], "image": f"precomputed:{tmp_path / 'none'}"}})


def test_missing_vectors_and_turns_are_data_errors(trained, dialog):
    from vlmtune.memory.connector import MemoryFeatures, connector_example

    features: MemoryFeatures = trained["conn"].setup.features
    ex = connector_example(dialog[0], lambda n: n)
    item = dict(ex.meta["connector"]["items"][0], text="a text that was never embedded")
    bad = type(ex)(**{**ex.__dict__, "meta": {"connector": {"items": [item]}}})
    with pytest.raises(DataError, match="vlmtune memory embed"):
        features.example_inputs([bad])
    model = trained["model"]
    inputs = features.example_inputs([ex])
    inputs["memory_turn"][0, 0] = 11
    with pytest.raises(DataError, match="connector.max_turns"):
        model.connector(inputs["memory_image"], inputs["memory_text"], inputs["memory_turn"], inputs["memory_mask"])


def test_query_block_gives_fixed_tokens():
    from vlmtune.models.connector import ConnectorShape, MemoryConnector

    c = MemoryConnector(
        ConnectorShape(8, 6, 16), ConnectorConfig(queries=3, fusion="mlp", fusion_dim=12, query_heads=2)
    )
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = c(torch.randn(2, 4, 8), torch.randn(2, 4, 6), torch.arange(4).expand(2, 4), mask)
    assert out.shape == (2, 3, 16) and c.tokens_for(1) == c.tokens_for(9) == 3


def test_connector_config_checks():
    from vlmtune.config import load_config

    with pytest.raises(ConfigError, match="loss_on=assistant"):
        load_config(None, ["connector.enabled=true", "train.loss_on=all"])
    with pytest.raises(ConfigError, match="connector.fusion"):
        load_config(None, ["connector.fusion=conv"])
    with pytest.raises(ConfigError, match="connector.max_turns"):
        load_config(None, ["connector.max_turns=0"])


def test_run_end_to_end(micro_model_dir, cache, tmp_path, monkeypatch):
    """vlmtune run with a connector at a small size, then eval and export of the saved connector."""
    from vlmtune.cli import main

    monkeypatch.chdir(tmp_path)
    args = [
        "run",
        str(ROOT / "recipes" / "shapes_dialog_connector.yaml"),
        "--overwrite",
        "name=conn",
        f"model.name={micro_model_dir}",
        "data.n=24",
        "connector.enabled=true",
        "connector.image_encoder=pixels",
        "connector.text_encoder=hashing:256",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.report_to=[]",
        "train.val_max_examples=2",
        "eval.mode=both",
        "eval.n_boot=50",
        "eval.max_new_tokens=4",
        "eval.batch_size=8",
    ]
    assert main(args) == 0
    run = tmp_path / "runs" / "conn"
    for sub in ("zero_shot", "finetuned"):
        metrics = json.loads((run / sub / "metrics.json").read_text())["metrics"]
        assert {"bleu", "rougeL", "r@1", "mrr"} <= set(metrics)
    assert (run / "connector" / "connector.safetensors").exists() and (run / "report.md").exists()
    fp = json.loads((run / "finetuned" / "fingerprint.json").read_text())
    assert fp["adapter"].endswith("connector") and fp["adapter_hash"]
    assert (
        main(
            [
                "eval",
                "--model",
                str(micro_model_dir),
                "--adapter",
                str(run / "connector"),
                "--data",
                str(run / "data" / "test.jsonl"),
                "--out",
                str(tmp_path / "ev"),
                "--mode",
                "generate",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    first = json.loads((run / "finetuned" / "metrics.json").read_text())
    assert again["metrics"]["rougeL"]["value"] == pytest.approx(first["metrics"]["rougeL"]["value"])
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "connector.safetensors").exists() and (tmp_path / "exp" / "export.json").exists()


def test_memory_embed_connector_fills_what_training_reads(dialog, cache, tmp_path):
    """`vlmtune memory embed --connector` stores every item's vectors; the features then read them all."""
    from vlmtune.cli import main
    from vlmtune.data.example import write_jsonl
    from vlmtune.memory.cache import EmbeddingCache
    from vlmtune.memory.connector import MemoryFeatures
    from vlmtune.memory.encoders import build_encoder

    path = write_jsonl(tmp_path / "d.jsonl", dialog)
    assert (
        main(
            [
                "memory",
                "embed",
                str(path),
                "--connector",
                "--no-captions",
                "--text-encoder",
                "hashing:64",
                "--image-encoder",
                "pixels:4",
                "-q",
            ]
        )
        == 0
    )
    caches = [EmbeddingCache.for_encoder(build_encoder(s)) for s in ("pixels:4", "hashing:64")]
    inputs = MemoryFeatures(*caches, max_turns=11).example_inputs(dialog)
    assert inputs["memory_mask"].sum() == sum(len(ex.prompt_messages()) // 2 + 1 for ex in dialog)
    assert inputs["memory_text"].abs().sum(dim=-1)[inputs["memory_mask"]].min() > 0


def test_lora_ablation_saves_and_reloads(micro_model_dir, dialog, cache, tmp_path):
    from vlmtune.memory.connector import load_for_eval, prepare_run
    from vlmtune.models.load import ModelRef
    from vlmtune.processing import encode_texts, example_inputs, prompt_text
    from vlmtune.train.trainer import train

    class Cfg:
        connector = ConnectorConfig(enabled=True, lora=True, tokens_per_item=2, **ENCODERS)

    ref = ModelRef.of(ModelConfig(name=str(micro_model_dir), device="cpu"))
    conn = prepare_run(Cfg, {"train": dialog[:4], "test": dialog[8:10]}, ref)
    from transformers import TrainerCallback

    seen = {}

    class Keep(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kw):
            seen["model"] = model

    tcfg = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, report_to=[], lora_r=4, lora_alpha=8, warmup_ratio=0.0)
    result = train(ref, conn.soft["train"], [], tmp_path, tcfg, connector=conn.setup, callbacks=[Keep()])
    assert (result.output_dir / "lm_adapter" / "adapter_config.json").exists()
    model, processor = load_for_eval(ref, result.output_dir)
    assert any("lora_" in n for n, _ in model.named_parameters())
    ex = conn.soft["test"][0]
    assert prompt_text(processor, ex).count("<memory>") == 2 * len(ex.meta["connector"]["items"])
    enc = {**encode_texts(processor, [prompt_text(processor, ex)], None), **example_inputs(processor, [ex])}
    live = seen["model"].eval()
    with torch.no_grad():
        a, b = live(**enc).logits, model(**enc).logits
        without_lora = live.lm.get_base_model()
        with live.lm.disable_adapter():
            c = live(**enc).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # connector and LoRA both reloaded
    assert without_lora is not None and not torch.allclose(a, c, atol=1e-4)  # the LoRA weights moved


def test_precomputed_vectors_made_elsewhere(dialog, cache, tmp_path):
    """The seed's path: vectors made elsewhere (ImageBind) written into a folder by content hash; `memory embed
    --connector` finds every item's there (and names what is missing), and the features read them."""
    import numpy as np

    from vlmtune.cli import main
    from vlmtune.data.example import write_jsonl
    from vlmtune.memory.cache import EmbeddingCache
    from vlmtune.memory.connector import MemoryFeatures, memory_items
    from vlmtune.memory.items import file_hash, text_hash

    path = write_jsonl(tmp_path / "d.jsonl", dialog)
    folder = tmp_path / "imagebind"
    store = EmbeddingCache(folder, {"name": "imagebind-huge", "hash": None, "pooling": "cls", "dim": 8})
    items = [it for ex in dialog for it in memory_items(ex)]
    texts = sorted({it["text"] for it in items})
    images = sorted({it["image"] for it in items})
    rng = np.random.default_rng(0)
    store.put_many([text_hash(t) for t in texts[1:]], rng.normal(size=(len(texts) - 1, 8)))
    store.put_many([file_hash(p) for p in images], rng.normal(size=(len(images), 8)))
    store.flush()
    spec = f"precomputed:{folder}"
    args = [
        "memory",
        "embed",
        str(path),
        "--connector",
        "--no-captions",
        "--text-encoder",
        spec,
        "--image-encoder",
        spec,
        "-q",
    ]
    assert main(args) == 2  # one item text has no vector: a DataError naming it, not a zero vector
    store.put_many([text_hash(texts[0])], rng.normal(size=(1, 8)))
    store.flush()
    assert main(args) == 0
    reread = EmbeddingCache.open_existing(folder)
    inputs = MemoryFeatures(reread, reread, max_turns=11).example_inputs(dialog)
    assert inputs["memory_image"].shape[-1] == inputs["memory_text"].shape[-1] == 8


def test_resume_continues_from_the_connector_checkpoint(micro_model_dir, dialog, cache, tmp_path):
    """Checkpoints hold the connector's weights only; a resumed run ends with the weights of the uninterrupted one."""
    from safetensors.torch import load_file

    from vlmtune.memory.connector import prepare_run
    from vlmtune.models.load import ModelRef
    from vlmtune.train.trainer import train

    class Cfg:
        connector = ConnectorConfig(enabled=True, **ENCODERS)

    ref = ModelRef.of(ModelConfig(name=str(micro_model_dir), device="cpu"))
    conn = prepare_run(Cfg, {"train": dialog[:8]}, ref)
    tcfg = TrainConfig(max_steps=3, batch_size=4, lr=1e-2, report_to=[], save_steps=2, warmup_ratio=0.0)
    whole = train(ref, conn.soft["train"], [], tmp_path / "whole", tcfg, connector=conn.setup)
    import shutil

    # an interruption after step 2: only the run's checkpoint-2 is left
    shutil.copytree(
        tmp_path / "whole" / "checkpoints" / "checkpoint-2", tmp_path / "cut" / "checkpoints" / "checkpoint-2"
    )
    ckpt = load_file(str(tmp_path / "cut" / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert ckpt and all(k.startswith("connector.") for k in ckpt)
    resumed = train(ref, conn.soft["train"], [], tmp_path / "cut", tcfg, connector=conn.setup, resume=True)
    assert resumed.steps == 3
    a = load_file(str(whole.output_dir / "connector.safetensors"))
    b = load_file(str(resumed.output_dir / "connector.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
