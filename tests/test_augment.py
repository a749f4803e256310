"""Offline augmentation: train split only, deterministic, copies marked and grouped with their source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmtune.data.example import Example
from vlmtune.data.splits import check_no_leakage, split_examples
from vlmtune.errors import ConfigError, DataError

pytest.importorskip("albumentations")
from vlmtune.data.augment import augment_split  # noqa: E402


def example(tmp_path: Path, i: int, target: str, suffix: str = ".png") -> Example:
    path = tmp_path / "src" / f"img{i}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return Example(
        id=f"ex{i}",
        task="classify",
        images=[str(path)],
        target=target,
        options=["a", "b"],
        group=f"scene{i}",
        meta={"k": i},
        messages=[{"role": "user", "content": "<image>\nWhich?"}, {"role": "assistant", "content": target}],
    )


@pytest.fixture
def train(tmp_path: Path) -> list[Example]:
    return [example(tmp_path, 0, "a"), example(tmp_path, 1, "b"), example(tmp_path, 2, "b", ".jpg")]


def test_only_the_train_split_is_augmented(train, tmp_path):
    for name in ("val", "test", "validation"):
        with pytest.raises(ConfigError, match="train split only"):
            augment_split(train, tmp_path / "aug", split_name=name)


def test_copies_are_marked_and_keep_the_source_group(train, tmp_path):
    new = augment_split(train, tmp_path / "aug", split_name="train", label="a", copies=2, seed=0)
    assert [ex.id for ex in new] == ["ex0-aug1", "ex0-aug2"]
    for k, ex in enumerate(new, start=1):
        assert ex.meta["augmented_from"] == "ex0" and ex.meta["k"] == 0
        assert ex.meta["augment"] == {"pipeline": "default", "seed": 0, "copy": k}
        assert ex.group == "scene0" and ex.target == "a" and ex.messages == train[0].messages
        img = Path(ex.images[0])
        assert img.parent == (tmp_path / "aug").resolve() and img.suffix == ".png"
        with Image.open(img) as im:
            assert im.size == (16, 16)
    assert train[0].meta == {"k": 0}  # the sources are untouched
    jpg = augment_split(train, tmp_path / "aug", split_name="train", label="b", copies=1, seed=0)
    assert [Path(ex.images[0]).suffix for ex in jpg] == [".png", ".jpg"]  # "same" format as the source


def test_same_seed_same_bytes_other_seed_other_images(train, tmp_path):
    def run(out: str, seed: int) -> list[bytes]:
        new = augment_split(train, tmp_path / out, split_name="train", copies=2, seed=seed, pipeline="photometric")
        return [Path(ex.images[0]).read_bytes() for ex in new]

    first = run("a", 0)
    assert run("b", 0) == first
    assert run("c", 1) != first
    # copy k of an example does not depend on the other examples
    alone = augment_split(train[1:2], tmp_path / "d", split_name="train", copies=2, seed=0, pipeline="photometric")
    assert [Path(ex.images[0]).read_bytes() for ex in alone] == first[2:4]


def test_split_keeps_copies_with_their_source(train, tmp_path):
    new = augment_split(train, tmp_path / "aug", split_name="train", copies=3, seed=0)
    splits = split_examples(train + new, {"train": 0.5, "test": 0.5}, seed=3)
    where = {ex.id: name for name, exs in splits.items() for ex in exs}
    for ex in new:
        assert where[ex.id] == where[ex.meta["augmented_from"]]
    check_no_leakage(splits)
    with pytest.raises(DataError, match="'ex0-aug1' already exists"):  # augmenting twice is refused
        augment_split(train + new, tmp_path / "aug2", split_name="train", copies=1, seed=0)


def test_bad_arguments(train, tmp_path):
    with pytest.raises(ConfigError, match="no train example has target == 'zzz'"):
        augment_split(train, tmp_path / "aug", split_name="train", label="zzz")
    with pytest.raises(ConfigError, match="copies"):
        augment_split(train, tmp_path / "aug", split_name="train", copies=0)
    with pytest.raises(ConfigError, match="unknown augmentation pipeline"):
        augment_split(train, tmp_path / "aug", split_name="train", pipeline="defualt")
