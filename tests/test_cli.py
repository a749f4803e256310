"""End-to-end CLI runs on a micro model, the recipes, and the user-facing errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmtune.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_recipe_is_what_the_quickstart_verb_runs():
    from vlmtune.config import QUICKSTART_OVERRIDES, load_config

    assert (
        load_config(ROOT / "recipes" / "quickstart.yaml").to_dict() == load_config(None, QUICKSTART_OVERRIDES).to_dict()
    )


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_validates(recipe, capsys):
    assert main(["validate", str(recipe)]) == 0
    assert "is valid" in capsys.readouterr().out


def test_validate_says_what_the_recipe_still_needs_here(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the seed recipe's data/raw_data is not here
    recipe = str(ROOT / "recipes" / "seed003_forensic_llava16.yaml")
    assert main(["validate", recipe]) == 0
    out = capsys.readouterr().out
    assert "note: data.path data/raw_data is not on this machine" in out
    assert "family llava_next" in out
    (tmp_path / "data" / "raw_data").mkdir(parents=True)
    assert main(["validate", recipe, "model.name=someone/unknown-arch"]) == 0
    out = capsys.readouterr().out
    assert "data/raw_data is not on this machine" not in out and "cannot tell the family of someone/unknown-arch" in out


def _run_args(tmp_path, micro_model_dir, *extra):
    return [
        "run",
        str(ROOT / "recipes" / "quickstart.yaml"),
        f"output_dir={tmp_path}",
        "name=e2e",
        f"model.name={micro_model_dir}",
        "data.n=64",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.logging_steps=1",
        "eval.n_boot=200",
        "eval.max_new_tokens=4",
        "-q",
        *extra,
    ]


def test_run_end_to_end_writes_the_run_directory(tmp_path, micro_model_dir, capsys):
    assert main(_run_args(tmp_path, micro_model_dir)) == 0
    run = tmp_path / "e2e"
    for f in [
        "config.yaml",
        "data/train.jsonl",
        "data/val.jsonl",
        "data/test.jsonl",
        "zero_shot/predictions.jsonl",
        "zero_shot/metrics.json",
        "zero_shot/fingerprint.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/processor_config.json",
        "finetuned/predictions.jsonl",
        "finetuned/metrics.json",
        "finetuned/fingerprint.json",
        "train_history.json",
        "report.md",
        "report.html",
        "comparison.json",
        "predictions.html",
        "plots/loss.png",
    ]:
        assert (run / f).is_file(), f
    assert list((run / "logs").glob("events.out.tfevents.*")), "no TensorBoard events"
    test_ids = [json.loads(l)["id"] for l in (run / "data/test.jsonl").read_text().splitlines()]
    preds = [json.loads(l) for l in (run / "finetuned/predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == test_ids and len(test_ids) == 8
    m = json.loads((run / "finetuned/metrics.json").read_text())
    assert m["n"] == 8 and m["mode"] == "generate" and m["decoding"]["strategy"] == "greedy"
    acc = sum(p["correct"] for p in preds) / len(preds)
    assert m["metrics"]["accuracy"]["value"] == pytest.approx(acc)
    fz = json.loads((run / "zero_shot/fingerprint.json").read_text())
    ff = json.loads((run / "finetuned/fingerprint.json").read_text())
    assert fz["adapter"] is None and ff["adapter"] and fz["prompt_hash"] == ff["prompt_hash"]
    history = json.loads((run / "train_history.json").read_text())
    assert any("loss_tokens_per_batch" in h for h in history)
    assert any("eval_accuracy" in h for h in history), "no generation-based validation was logged"
    out = capsys.readouterr().out
    assert "McNemar" in out and "report" in out and "minimum detectable accuracy difference" in out
    # count defines a per-example value (absolute error), tested where both runs parsed at least two answers; with
    # two tests the report gives Holm-adjusted p-values beside the raw ones
    zero = [json.loads(l) for l in (run / "zero_shot/predictions.jsonl").read_text().splitlines()]
    both = sum(a["parse_ok"] and b["parse_ok"] for a, b in zip(zero, preds))
    tests = json.loads((run / "comparison.json").read_text())["tests"]
    assert [t["metric"] for t in tests] == ["accuracy"] + (["abs_error"] if both >= 2 else [])
    report = (run / "report.md").read_text()
    assert ("| p, Holm-adjusted (2 tests) |" in report) == ("Holm-adjusted over 2 tests" in out) == (both >= 2)
    assert all((t["p_holm"] is not None) == (both >= 2) for t in tests)
    assert "Minimum detectable difference: with n = 8" in report
    assert "[predictions.html](predictions.html)" in report

    # The verbs work on their own on the run's artifacts.
    assert (
        main(
            [
                "eval",
                "--model",
                str(micro_model_dir),
                "--adapter",
                str(run / "adapter"),
                "--data",
                str(run / "data/test.jsonl"),
                "--out",
                str(tmp_path / "ev"),
                "-q",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    again = [json.loads(l) for l in (tmp_path / "ev/predictions.jsonl").read_text().splitlines()]
    assert [a["prediction"] for a in again] == [p["prediction"] for p in preds]  # greedy = deterministic
    assert main(["compare", str(run / "zero_shot"), str(tmp_path / "ev"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp/report.html").is_file()
    image = json.loads((run / "data/test.jsonl").read_text().splitlines()[0])["images"][0]
    predict = [
        "predict",
        "--model",
        str(micro_model_dir),
        "--adapter",
        str(run / "adapter"),
        "--image",
        str(run / "data" / image),
        "--prompt",
        preds[0]["prompt"].split("\n")[-1],
        "--max-new-tokens",
        "4",
    ]
    capsys.readouterr()
    assert main(predict) == 0
    # The same question through `predict` gives the same greedy answer as the evaluation did.
    assert capsys.readouterr().out.rstrip("\n") == preds[0]["prediction"]


def test_resume_keeps_finished_stages(tmp_path, micro_model_dir, capsys):
    assert main(_run_args(tmp_path, micro_model_dir)) == 0
    before = (tmp_path / "e2e/adapter/adapter_model.safetensors").read_bytes()
    capsys.readouterr()
    # Logs go to stderr (stdout carries results); without -q they include the stage notes.
    assert main([a for a in _run_args(tmp_path, micro_model_dir, "--resume") if a != "-q"]) == 0
    assert "kept the finished training" in capsys.readouterr().err
    assert (tmp_path / "e2e/adapter/adapter_model.safetensors").read_bytes() == before
    # Without --resume or --overwrite an existing run is not clobbered.
    assert main(_run_args(tmp_path, micro_model_dir)) == 2


def test_bad_inputs_fail_before_training_with_clear_errors(tmp_path, micro_model_dir, capsys):
    recipe = str(ROOT / "recipes" / "quickstart.yaml")
    assert main(["validate", recipe, "train.epcohs=3"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err.lower()
    assert main(["validate", recipe, "data.task=cuont"]) == 2
    assert "Did you mean 'count'" in capsys.readouterr().err
    assert main(["validate", recipe, "train.lora_target=vision"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "task": "count", "messages": [{"role": "user", "content": "hi"}, '
        '{"role": "assistant", "content": "1"}], "target": 1}\n{not json\n'
    )
    assert (
        main(
            [
                "run",
                recipe,
                f"output_dir={tmp_path}",
                "name=bad",
                f"model.name={micro_model_dir}",
                "data.source=jsonl",
                f"data.path={bad}",
                "-q",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "not valid JSON" in err
    assert not (tmp_path / "bad" / "adapter").exists()


def test_data_synth_and_inspect_and_ls(tmp_path, capsys):
    assert main(["data", "synth", "--task", "classify", "--n", "12", "--out", str(tmp_path / "d"), "-q"]) == 0
    assert len(list((tmp_path / "d/images").glob("*.png"))) == 12
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "d/data.jsonl")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 12 and info["rejected"] == 0 and info["tasks"] == {"classify": 12}
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "count" in out and "classify" in out and "jsonl" in out and "train.lora_r" in out


TASK_KEYS = {
    "shapes_classify.yaml": {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion"},
    "shapes_mcq.yaml": {
        "accuracy",
        "photo_accuracy",
        "exact_match",
        "loglik_accuracy",
        "metric_modes",
        "order_consistency",
        "position_bias",
        "accuracy_by_ordering",
    },
    "shapes_dialog.yaml": {"bleu", "rougeL", "cider", "r@1", "r@10", "mrr", "mean_rank", "ndcg", "stripped_fraction"},
}


@pytest.mark.parametrize("recipe", sorted(TASK_KEYS))
def test_every_task_recipe_runs_end_to_end(recipe, tmp_path, micro_model_dir):
    assert (
        main(
            [
                "run",
                str(ROOT / "recipes" / recipe),
                f"output_dir={tmp_path}",
                "name=t",
                f"model.name={micro_model_dir}",
                "data.n=32",
                "train.max_steps=2",
                "train.batch_size=4",
                "eval.n_boot=100",
                "eval.max_new_tokens=4",
                "train.val_max_examples=4",
                "-q",
            ]
        )
        == 0
    )
    run = tmp_path / "t"
    m = json.loads((run / "finetuned/metrics.json").read_text())
    missing = TASK_KEYS[recipe] - set(m["metrics"])
    assert not missing, missing
    for key in TASK_KEYS[recipe]:
        entry = m["metrics"][key]
        if isinstance(entry, dict) and "value" in entry:
            assert len(entry["ci"]) == 2 and entry["n"] > 0, (key, entry)
    preds = [json.loads(l) for l in (run / "finetuned/predictions.jsonl").read_text().splitlines()]
    if m["mode"] == "both":
        assert all(
            len(p["scores"]) == len(json.loads(l)["options"])
            for p, l in zip(preds, (run / "data/test.jsonl").read_text().splitlines())
        )
    report = (run / "report.md").read_text()
    assert "McNemar" in report and "Minimum detectable difference" in report and "| interval |" in report
    tested = [t["metric"] for t in json.loads((run / "comparison.json").read_text())["tests"]]
    assert (
        tested
        == {
            "shapes_classify.yaml": ["accuracy"],
            "shapes_mcq.yaml": ["accuracy"],
            "shapes_dialog.yaml": ["accuracy", "reciprocal_rank", "rougeL"],
        }[recipe]
    )
    assert ("Holm-adjusted" in report) == (len(tested) > 1)


def test_data_convert_and_split_with_train_only_augmentation(tmp_path, capsys):
    pytest.importorskip("albumentations")
    from PIL import Image

    for folder, n in (("0_irrelevant", 12), ("2_drug_trade", 4)):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (10 * i, 100, 200)).save(tmp_path / "raw" / folder / f"img{i}.png")
    assert (
        main(
            [
                "data",
                "convert",
                "--format",
                "imagefolder",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "all.jsonl"),
                "--opt",
                "labels={0_irrelevant: 관련 없음, 2_drug_trade: 마약 거래}",
            ]
        )
        == 0
    )
    rows = [json.loads(l) for l in (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16 and {r["target"] for r in rows} == {"관련 없음", "마약 거래"}
    assert (
        main(
            [
                "data",
                "split",
                str(tmp_path / "all.jsonl"),
                "--out",
                str(tmp_path / "s"),
                "--fractions",
                "train=0.75,test=0.25",
                "--augment-label",
                "마약 거래",
                "--augment-copies",
                "4",
                "-q",
            ]
        )
        == 0
    )
    train = [json.loads(l) for l in (tmp_path / "s/train.jsonl").read_text(encoding="utf-8").splitlines()]
    test = [json.loads(l) for l in (tmp_path / "s/test.jsonl").read_text(encoding="utf-8").splitlines()]
    aug = [r for r in train if r["meta"].get("augmented_from")]
    assert len(aug) == 4 * sum(r["target"] == "마약 거래" and not r["meta"].get("augmented_from") for r in train)
    assert not any(r["meta"].get("augmented_from") for r in test)
    assert len(test) == 4 and {r["group"] for r in aug} <= {r["group"] for r in train}


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_passes_smoke(recipe, tmp_path, monkeypatch, capsys):
    """--smoke swaps in a stand-in of the recipe's model family and a few records, and runs every stage."""
    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the seed recipes' data paths do not exist here: fixtures are used
    assert main(["run", str(recipe), f"output_dir={tmp_path / 'runs'}", "-q", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "[smoke] every stage" in out
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]  # .<name>.lock: the run lock
    assert len(runs) == 1 and runs[0].name.endswith("-smoke")
    for f in ("config.yaml", "data/test.jsonl", "zero_shot/metrics.json", "finetuned/metrics.json", "report.html"):
        assert (runs[0] / f).is_file(), f
    assert any((runs[0] / d).is_dir() for d in ("adapter", "model", "connector"))


def test_smoke_uses_the_users_own_records_when_present(tmp_path, monkeypatch, capsys):
    pytest.importorskip("albumentations")
    from PIL import Image

    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    for folder in ("0_irrelevant", "1_drug_use", "2_drug_trade", "3_drug_sample"):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 40), (20 * i, 60 * len(folder) % 255, 90)).save(
                tmp_path / "raw" / folder / f"{i}.png"
            )
    assert (
        main(
            [
                "run",
                str(ROOT / "recipes" / "seed003_forensic_llava16.yaml"),
                f"output_dir={tmp_path / 'runs'}",
                f"data.path={tmp_path / 'raw'}",
                "--smoke",
            ]
        )
        == 0
    )
    assert "a seeded sample of 16 records (stratified by label)" in capsys.readouterr().err
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    rows = [
        json.loads(l)
        for s in ("train", "val", "test")
        if (run / "data" / f"{s}.jsonl").exists()
        for l in (run / "data" / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    labels = [r["target"] for r in rows if "augmented_from" not in (r.get("meta") or {})]
    assert len(rows) > len(labels)  # the recipe's x4 copies of one class, in train only
    # The folder is class-ordered; the sample still holds every class (4 of each), mapped to the recipe's names.
    assert (
        sorted(set(labels)) == sorted({"관련 없음", "마약 투약 사진", "마약 거래 대화", "마약 실물"})
        and len(labels) == 16
    )
