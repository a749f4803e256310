"""data.source: hf: a local folder laid out as a hub dataset repo (parquet files + README.md) loaded by path,
the by-name path offline (cached snapshot, and the error without one), column mappings, streaming."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image

from vlmtune.config import load_config
from vlmtune.data.formats.hf import read_hf
from vlmtune.data.prepare import prepare_data
from vlmtune.errors import ConfigError, DataError

datasets = pytest.importorskip("datasets")

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# people-count (test fixture)
"""


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    im = Image.new("RGB", (24, 16), (20 * i % 255, 80, 160))
    im.putpixel((i % 24, i % 16), (255, 255, 255))
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def hub_repo(tmp_path):
    """owner/people-count as the hub stores it: data/{split}-00000-of-00001.parquet and a README with configs."""
    repo = tmp_path / "people-count"
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "count": datasets.Value("int64"),
            "scene": datasets.ClassLabel(names=["mall", "street"]),
            "frame": datasets.Value("string"),
        }
    )
    for split, rng in (("train", range(0, 12)), ("test", range(12, 16))):
        rows = {
            "image": [{"bytes": _png(i), "path": f"f{i}.png"} for i in rng],
            "question": ["How many people are in this frame?"] * len(rng),
            "count": [i % 5 for i in rng],
            "scene": [i % 2 for i in rng],
            "frame": [f"seq_{i:06d}" for i in rng],
        }
        (repo / "data").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            repo / "data" / f"{split}-00000-of-00001.parquet"
        )
    (repo / "README.md").write_text(README)
    return repo


@pytest.fixture(autouse=True)
def hf_caches(tmp_path, monkeypatch):
    """Hub and datasets caches in the test's folder; the hub offline (as it is here)."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return tmp_path / "hub"


def test_local_hub_folder_simple_columns(hub_repo, tmp_path):
    reader = read_hf(
        hub_repo, task="count", columns={"answer": "count", "id": "frame"}, extract_images_to=tmp_path / "imgs"
    )
    exs = list(reader)
    assert len(exs) == 12 and reader.rejected == 0
    ex = exs[3]
    assert ex.id == "seq_000003" and ex.target == 3 and ex.task == "count"
    assert ex.messages == [
        {"role": "user", "content": "<image>\nHow many people are in this frame?"},
        {"role": "assistant", "content": "3"},
    ]
    # the embedded PNG bytes were written once, named by their hash, and decode to the same pixels
    assert len(list((tmp_path / "imgs").iterdir())) == 12
    assert Image.open(ex.images[0]).tobytes() == Image.open(io.BytesIO(_png(3))).tobytes()


def test_streaming_gives_the_same_examples(hub_repo, tmp_path):
    kw = dict(task="count", split="test", columns={"answer": "count"}, extract_images_to=tmp_path / "imgs")
    plain = [e.to_dict() for e in read_hf(hub_repo, **kw)]
    streamed = [e.to_dict() for e in read_hf(hub_repo, streaming=True, **kw)]
    assert plain == streamed and len(plain) == 4


def test_class_label_and_prompt_template(hub_repo, tmp_path):
    exs = list(
        read_hf(
            hub_repo,
            task="classify",
            columns={"label": "scene"},
            prompt="Where was {frame} taken?",
            extract_images_to=tmp_path / "imgs",
        )
    )
    assert exs[1].options == ["mall", "street"] and exs[1].target == "street"
    assert exs[1].messages[0]["content"] == "<image>\nWhere was seq_000001 taken?"


def test_messages_columns(tmp_path):
    repo = tmp_path / "chat"
    (repo / "data").mkdir(parents=True)
    rows = [
        {
            "id": f"c{i}",
            "conversations": [{"from": "human", "value": "<image>How many?"}, {"from": "gpt", "value": str(i)}],
            "images": [{"bytes": _png(i), "path": None}],
        }
        for i in range(3)
    ]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
            "images": [datasets.Image()],
        }
    )
    datasets.Dataset.from_list(rows, features=features).to_parquet(repo / "data" / "train-00000-of-00001.parquet")
    exs = list(read_hf(repo, task="count", formatting="sharegpt", extract_images_to=tmp_path / "imgs"))
    assert [e.id for e in exs] == ["c0", "c1", "c2"] and exs[2].target == 2
    assert exs[2].messages[0]["content"] == "<image>How many?" and len(exs[2].images) == 1


def test_missing_column_and_split_are_clear_errors(hub_repo, tmp_path):
    with pytest.raises(DataError) as ei:
        read_hf(hub_repo, task="count", columns={"answer": "people"})
    assert ei.value.field == "columns.answer" and "count" in ei.value.fix
    with pytest.raises(ConfigError, match="validation"):
        read_hf(hub_repo, task="count", split="validation", columns={"answer": "count"})


def test_by_name_offline_without_cache_names_the_dataset_and_the_fix(hf_caches):
    with pytest.raises(DataError) as ei:
        read_hf("owner/people-count", task="count")
    e = ei.value
    assert "owner/people-count" in str(e) and "not in the local cache" in str(e)
    assert "download owner/people-count --repo-type dataset" in e.fix


def test_by_name_offline_uses_the_cached_snapshot(hub_repo, hf_caches, tmp_path):
    """The hub cache layout huggingface_hub writes (datasets--owner--name/snapshots/<commit>, refs/main)."""
    commit = "a" * 40
    root = hf_caches / "datasets--owner--people-count"
    shutil.copytree(hub_repo, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    exs = list(
        read_hf(
            "owner/people-count",
            task="count",
            split="test",
            columns={"answer": "count"},
            extract_images_to=tmp_path / "imgs",
        )
    )
    assert [e.target for e in exs] == [12 % 5, 13 % 5, 14 % 5, 15 % 5]
    assert exs[0].id == "people-count-test-000000"


def test_recipe_with_source_hf(hub_repo, tmp_path):
    cfg = load_config(
        None,
        [
            "data.source=hf",
            f"data.hf_name={hub_repo}",
            "data.task=count",
            "data.hf_columns={answer: count}",
            "data.train=train",
            "data.test=test",
            "data.hf_streaming=true",
        ],
    )
    splits = prepare_data(cfg, tmp_path / "run")
    assert len(splits["train"]) == 12 and len(splits["test"]) == 4 and splits["val"] == []
    back = [json.loads(x) for x in (tmp_path / "run/data/test.jsonl").read_text().splitlines()]
    assert [r["target"] for r in back] == [2, 3, 4, 0]
    assert all((tmp_path / "run/data" / r["images"][0]).parent == tmp_path / "run/data/images" for r in back)
    # one split of the dataset, split by data.split
    cfg = load_config(
        None,
        [
            "data.source=hf",
            f"data.hf_name={hub_repo}",
            "data.task=count",
            "data.hf_columns={answer: count}",
            "data.split={train: 0.75, val: 0, test: 0.25}",
        ],
    )
    splits = prepare_data(cfg, tmp_path / "run2")
    assert (len(splits["train"]), len(splits["test"])) == (9, 3)


def test_config_checks():
    with pytest.raises(ConfigError, match="hf_name"):
        load_config(None, ["data.source=hf"])
    with pytest.raises(ConfigError, match="data.test"):
        load_config(None, ["data.source=hf", "data.hf_name=x/y", "data.train=train"])
