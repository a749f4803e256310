"""Leaks are refused where users meet them: `vlmtune run`, `train`, `eval` and `score`, not only by the checking
functions. A split that puts one group in train and test, and a dialogue whose input already holds the asked
round's gold answer, each stop the command with exit code 2, a message naming the record, and no results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vlmtune.cli import main
from vlmtune.data.example import load_jsonl, write_jsonl
from vlmtune.data.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "quickstart.yaml")


@pytest.fixture(scope="module")
def count_files(tmp_path_factory):
    """Split files of the count task: clean ones and ones where a train group reappears in test."""
    d = tmp_path_factory.mktemp("leak-count")
    examples = load_jsonl(synthesize("count", 24, d / "src", seed=2))
    train, val, test = examples[:16], examples[16:20], examples[20:]
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "val.jsonl", val)
    write_jsonl(d / "test.jsonl", test)
    # A different record (new id) of a scene that is in train: e.g. the same frame asked about twice.
    twin = dataclasses.replace(test[0], id=test[0].id + "-twin", group=train[3].group)
    write_jsonl(d / "test_leaky.jsonl", test[1:] + [twin])
    # An augmented copy in val whose source is in train (augment after a split, then re-split badly).
    copy = dataclasses.replace(
        train[5],
        id=train[5].id + "-aug1",
        group=train[5].group + "-x",
        meta={**(train[5].meta or {}), "augmented_from": train[5].id},
    )
    write_jsonl(d / "val_leaky.jsonl", val + [copy])
    return d, train[3].group, train[5].id


def _run(micro_model_dir, out, data_dir, *, train="train.jsonl", val="val.jsonl", test="test.jsonl", verb="run"):
    return main(
        [
            verb,
            RECIPE,
            f"output_dir={out}",
            "name=leak",
            f"model.name={micro_model_dir}",
            "data.source=jsonl",
            f"data.train={data_dir / train}",
            f"data.val={data_dir / val}",
            f"data.test={data_dir / test}",
            "train.max_steps=1",
            "train.batch_size=4",
            "eval.n_boot=20",
            "eval.max_new_tokens=2",
            "-q",
        ]
    )


@pytest.mark.parametrize("verb", ["run", "train"])
def test_a_group_in_two_splits_stops_run_and_train(verb, count_files, micro_model_dir, tmp_path, capsys):
    d, group, _ = count_files
    assert _run(micro_model_dir, tmp_path, d, test="test_leaky.jsonl", verb=verb) == 2
    err = capsys.readouterr().err
    assert f"group '{group}' is in both 'train' and 'test'" in err, err
    assert "Traceback" not in err
    run = tmp_path / "leak"
    # Refused before any model work: no evaluation, no training, no split files written.
    assert not (run / "zero_shot").exists() and not (run / "adapter").exists() and not (run / "checkpoints").exists()
    assert not (run / "data" / "test.jsonl").exists()


def test_an_augmented_copy_across_splits_stops_the_run(count_files, micro_model_dir, tmp_path, capsys):
    d, _, source = count_files
    assert _run(micro_model_dir, tmp_path, d, val="val_leaky.jsonl") == 2
    err = capsys.readouterr().err
    assert f"is an augmented copy of '{source}'" in err and "meta.augmented_from" in err, err


def test_clean_split_files_run(count_files, micro_model_dir, tmp_path):
    """The same files without the leak go through (so the refusals above are about the leak)."""
    d, _, _ = count_files
    assert _run(micro_model_dir, tmp_path, d) == 0
    assert (tmp_path / "leak" / "finetuned" / "metrics.json").is_file()


# --- dialogue: round r's gold answer in the model input -----------------------------------------------------


@pytest.fixture(scope="module")
def dialog_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("leak-dialog")
    examples = load_jsonl(synthesize("dialog", 24, d / "src", seed=4))
    # Train on whole dialogues, test on others (the synthesizer's groups are scenes).
    test_groups = sorted({e.group for e in examples})[-1:]
    train = [e for e in examples if e.group not in test_groups]
    test = [e for e in examples if e.group in test_groups]
    victim = next(e for e in test if e.target["round"] > 1)
    gold = victim.target["answer"]
    prompt = victim.prompt_messages()
    leaked = prompt[:-1] + [{**prompt[-1], "content": prompt[-1]["content"] + f" A: {gold}"}] + victim.messages[-1:]
    leaky = dataclasses.replace(victim, messages=leaked)
    write_jsonl(d / "train.jsonl", train[:12])
    write_jsonl(d / "val.jsonl", train[12:14])
    write_jsonl(d / "test.jsonl", test)
    write_jsonl(d / "test_leaky.jsonl", [leaky if e.id == victim.id else e for e in test])
    # Predictions for `vlmtune score`: text answers and option scores, one per test example.
    (d / "answers.jsonl").write_text("".join(json.dumps({"id": e.id, "prediction": "yes"}) + "\n" for e in test))
    (d / "scores.jsonl").write_text(
        "".join(json.dumps({"id": e.id, "scores": [float(-i) for i in range(len(e.options))]}) + "\n" for e in test)
    )
    return d, victim.id, victim.target["round"]


def _dialog_recipe_args(micro_model_dir, out, d, test):
    return [
        "run",
        str(ROOT / "recipes" / "shapes_dialog.yaml"),
        f"output_dir={out}",
        "name=dl",
        f"model.name={micro_model_dir}",
        "data.source=jsonl",
        f"data.train={d / 'train.jsonl'}",
        f"data.val={d / 'val.jsonl'}",
        f"data.test={d / test}",
        "train.max_steps=1",
        "train.batch_size=4",
        "eval.n_boot=20",
        "eval.max_new_tokens=2",
        "-q",
    ]


def _says_leak(err: str, ex_id: str, r: int) -> bool:
    return f"example '{ex_id}' (round {r})" in err and "gold answer" in err and "Traceback" not in err


def test_vlmtune_run_refuses_a_leaking_dialogue(dialog_files, micro_model_dir, tmp_path, capsys):
    d, ex_id, r = dialog_files
    assert main(_dialog_recipe_args(micro_model_dir, tmp_path, d, "test_leaky.jsonl")) == 2
    err = capsys.readouterr().err
    assert _says_leak(err, ex_id, r), err
    assert not (tmp_path / "dl" / "zero_shot" / "metrics.json").exists()
    assert not (tmp_path / "dl" / "adapter").exists()


@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_vlmtune_eval_refuses_a_leaking_dialogue(mode, dialog_files, micro_model_dir, tmp_path, capsys):
    d, ex_id, r = dialog_files
    args = [
        "eval",
        "--model",
        str(micro_model_dir),
        "--data",
        str(d / "test_leaky.jsonl"),
        "--out",
        str(tmp_path / "ev"),
        "--mode",
        mode,
        "--max-new-tokens",
        "2",
        "-q",
    ]
    assert main(args) == 2
    assert _says_leak(capsys.readouterr().err, ex_id, r)
    assert not (tmp_path / "ev" / "metrics.json").exists() and not (tmp_path / "ev" / "predictions.jsonl").exists()
    # The file without the leak is evaluated.
    args[args.index("--data") + 1] = str(d / "test.jsonl")
    assert main(args) == 0 and (tmp_path / "ev" / "metrics.json").is_file()


@pytest.mark.parametrize("predictions", ["answers.jsonl", "scores.jsonl"])
def test_vlmtune_score_refuses_a_leaking_dialogue(predictions, dialog_files, tmp_path, capsys):
    d, ex_id, r = dialog_files
    args = [
        "score",
        "--task",
        "dialog",
        "--data",
        str(d / "test_leaky.jsonl"),
        "--predictions",
        str(d / predictions),
        "--out",
        str(tmp_path / "sc"),
    ]
    assert main(args) == 2
    assert _says_leak(capsys.readouterr().err, ex_id, r)
    assert not (tmp_path / "sc" / "metrics.json").exists()
    args[args.index("--data") + 1] = str(d / "test.jsonl")
    assert main(args) == 0 and (tmp_path / "sc" / "metrics.json").is_file()
