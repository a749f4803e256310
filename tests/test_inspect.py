"""vlmtune data inspect: the render (chat template, image tokens, loss part), token lengths and the share
max_length cuts, images, labels per split, refused examples, near-duplicates; Markdown and HTML."""

from __future__ import annotations

import json
import shutil

import pytest

from vlmtune.cli import main
from vlmtune.config import ModelConfig
from vlmtune.data.example import load_jsonl, write_jsonl
from vlmtune.data.splits import split_examples
from vlmtune.data.synth import synthesize
from vlmtune.models.load import ModelRef, load_processor
from vlmtune.processing import render


@pytest.fixture
def split_files(tmp_path):
    exs = load_jsonl(synthesize("count", 24, tmp_path / "src", seed=2))
    splits = split_examples(exs, {"train": 0.75, "test": 0.25}, seed=0)
    # a planted near-duplicate: test holds a copy of a train image under another id and group
    dup = splits["train"][0]
    copy = tmp_path / "src" / "copy.png"
    shutil.copy(dup.images[0], copy)
    splits["test"].append(type(dup)(**{**dup.to_dict(), "id": "copy-1", "group": "copy", "images": [str(copy)]}))
    paths = {n: write_jsonl(tmp_path / f"{n}.jsonl", v) for n, v in splits.items()}
    with paths["test"].open("a") as f:
        f.write("{not json\n")
    return paths


def test_inspect_renders_what_the_model_sees(split_files, micro_model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(
            [
                "data",
                "inspect",
                str(split_files["train"]),
                str(split_files["test"]),
                "--render",
                "3",
                "--model",
                str(micro_model_dir),
                "--max-length",
                "24",
                "--out",
                str(out),
                "--skip-invalid",
                "-q",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["splits"] == {"train": 18, "test": 7} and info["rejected"] == 1
    assert info["near_duplicate_pairs"] == 1 and info["image_modes"] == {"RGB": 25}
    tokens = info["tokens"]
    # every example is 16 image tokens plus its text; at max_length 24 the answers are cut off
    assert tokens["max_length"] == 24 and tokens["min"] > 24 and tokens["share_cut"] == 1.0
    assert info["refused"] == 1 + 25  # the bad line, then every example whose answer max_length cuts
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()

    # the rendering is the model's own chat template, image tokens marked, the loss part highlighted
    processor, _ = load_processor(ModelRef("micro", str(micro_model_dir), ModelConfig(name=str(micro_model_dir))))
    ex = load_jsonl(split_files["train"])[0]
    text = render(processor, ex.messages, add_generation_prompt=False)
    user_line = text.split("<image>")[0]
    assert user_line and user_line in md and "<image x 16>" in md
    assert "[[" in md and "[train.max_length = 24: cut here]" in md and "shapes are there" in md
    assert '<span class="loss"' in html and '<span class="image"' in html and "&lt;image x 16&gt;" in html
    assert "no answer tokens left after truncation" in md and "not valid JSON" in md
    assert "copy-1" in md and "Near-duplicate images across splits (1)" in md
    assert (out / "plots" / "token_lengths.png").stat().st_size > 0


def test_inspect_without_render_needs_no_model(split_files, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["data", "inspect", str(split_files["train"]), "--out", str(out), "-q"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 18 and "tokens" not in info and info["near_duplicate_pairs"] == 0
    md = (out / "report.md").read_text()
    assert "Not rendered" in md and "one split: nothing to compare" in md
    assert "| total | 18 |" in md


def test_inspect_strict_stops_at_a_bad_line(split_files, tmp_path):
    assert main(["data", "inspect", str(split_files["test"]), "--out", str(tmp_path / "r")]) == 2


def test_inspect_a_recipe(tmp_path, micro_model_dir, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "data",
                "inspect",
                "recipes/quickstart.yaml",
                "--render",
                "2",
                "--model",
                str(micro_model_dir),
                "--set",
                "data.n=40",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["splits"] == {"train": 30, "val": 5, "test": 5} and info["tokens"]["share_cut"] == 0.0
    assert (out / "data" / "test.jsonl").exists() and (out / "report.html").exists()
