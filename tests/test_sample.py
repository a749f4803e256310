"""data.sample: a seeded, stratified, group-keeping sample of the records read (what --smoke reads)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from vlmtune.config import load_config
from vlmtune.data.prepare import read_files
from vlmtune.errors import ConfigError


def image_folder(root: Path, counts: dict[str, int], aug: int = 0) -> Path:
    """Seed 003's layout, class after class: root/0_irrelevant/c0_000.png ... (+ c0_000_aug1.png copies).

    Stems differ between classes: the reader groups by file stem, so equal names would be one group."""
    for c, (folder, n) in enumerate(counts.items()):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            for stem in [f"c{c}_{i:03d}"] + [f"c{c}_{i:03d}_aug{a}" for a in range(1, aug + 1)]:
                Image.new("RGB", (8, 8), (i % 256, 40, 90)).save(root / folder / f"{stem}.png")
    return root


def cfg_for(root: Path, *overrides: str):
    return load_config(
        None, ["data.source=files", "data.format=imagefolder", "data.task=classify", f"data.path={root}", *overrides]
    )


def read(root: Path, *overrides: str):
    cfg = cfg_for(root, *overrides)
    return read_files(cfg, cfg.data.path)


CLASSES = {"0_irrelevant": 40, "1_relevant": 40}


def test_sample_keeps_both_classes_of_a_class_ordered_folder(tmp_path, log_lines):
    root = image_folder(tmp_path / "raw_data", CLASSES)
    assert Counter(e.target for e in read(root, "data.limit=16")) == {"irrelevant": 16}  # the old smoke problem
    lines = log_lines
    kept = read(root, "data.sample=16")
    assert Counter(e.target for e in kept) == {"irrelevant": 8, "relevant": 8}
    assert any("sampled 16 of the 80 records read" in line for line in lines), lines
    everything = [e.id for e in read(root)]
    assert [e.id for e in kept] == [i for i in everything if i in {e.id for e in kept}]  # file order kept


def test_sample_is_seeded(tmp_path):
    root = image_folder(tmp_path / "raw_data", CLASSES)
    a = [e.id for e in read(root, "data.sample=16", "data.seed=1")]
    b = [e.id for e in read(root, "data.sample=16", "data.seed=1")]
    c = [e.id for e in read(root, "data.sample=16", "data.seed=2")]
    assert a == b and a != c and len(c) == 16


def test_sample_zero_or_larger_than_the_file_keeps_everything(tmp_path):
    root = image_folder(tmp_path / "raw_data", CLASSES)
    assert len(read(root)) == len(read(root, "data.sample=0")) == len(read(root, "data.sample=500")) == 80


def test_sample_applies_after_limit(tmp_path):
    root = image_folder(tmp_path / "raw_data", CLASSES)
    kept = read(root, "data.limit=60", "data.sample=10")  # 40 irrelevant + 20 relevant read
    assert Counter(e.target for e in kept) == {"irrelevant": 7, "relevant": 3}


def test_every_class_is_represented_even_a_rare_one(tmp_path):
    root = image_folder(tmp_path / "raw_data", {"0_a": 70, "1_b": 3, "2_c": 2})
    for seed in range(5):
        kept = read(root, "data.sample=16", f"data.seed={seed}")
        assert len(kept) == 16 and set(Counter(e.target for e in kept)) == {"a", "b", "c"}


def test_a_small_sample_spreads_over_groups_and_the_split_stays_leak_free(tmp_path):
    from vlmtune.data.splits import check_no_leakage, split_examples

    root = image_folder(tmp_path / "raw_data", CLASSES, aug=1)  # groups of 2: cC_NNN and cC_NNN_aug1
    kept = read(root, "data.sample=16", "data.seed=3")
    assert len(kept) == 16 and len({e.group for e in kept}) == 16  # one record from each of 16 groups
    assert Counter(e.target for e in kept) == {"irrelevant": 8, "relevant": 8}
    check_no_leakage(split_examples(kept, {"train": 0.75, "test": 0.25}, seed=0))


def test_same_file_names_in_every_class_folder_still_give_a_three_way_split(tmp_path):
    """The reader groups by stem, so 0_a/0.png and 1_b/0.png are one group: 10 groups of 4 here."""
    from vlmtune.data.splits import check_no_leakage, split_examples

    for folder in ("0_a", "1_b", "2_c", "3_d"):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "raw" / folder / f"{i}.png")
    kept = read(tmp_path / "raw", "data.sample=16")
    assert Counter(e.target for e in kept) == {"a": 4, "b": 4, "c": 4, "d": 4}
    assert len({e.group for e in kept}) == 10
    check_no_leakage(split_examples(kept, {"train": 0.7225, "val": 0.1275, "test": 0.15}, seed=0))


def test_negative_sample_is_a_config_error(tmp_path):
    root = image_folder(tmp_path / "raw_data", {"0_a": 2})
    with pytest.raises(ConfigError, match="data.sample"):
        cfg_for(root, "data.sample=-1")


def test_smoke_samples_the_users_data_instead_of_taking_its_head(tmp_path, monkeypatch, log_lines):
    import vlmtune.models.families as families
    from vlmtune.smoke import SMOKE_RECORDS, SMOKE_SCAN, smoke_config

    monkeypatch.setattr(families, "build_standin", lambda family, path: path)  # no model needed here
    root = image_folder(tmp_path / "raw_data", CLASSES)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "seed003_forensic_llava16.yaml"
    lines = log_lines
    cfg = load_config(recipe, [f"data.path={root}", "data.format_options={}"])
    s = smoke_config(cfg, cache=tmp_path / "cache")
    assert (s.data.limit, s.data.sample) == (SMOKE_SCAN, SMOKE_RECORDS) == (2000, 16)
    assert (cfg.data.limit, cfg.data.sample) == (0, 0)  # the recipe itself is untouched
    assert any(f"sample of {SMOKE_RECORDS} records" in line for line in lines), lines
    assert set(Counter(e.target for e in read_files(s, s.data.path))) == {"irrelevant", "relevant"}
    # A recipe's own smaller bounds win.
    small = smoke_config(
        load_config(recipe, [f"data.path={root}", "data.format_options={}", "data.limit=50", "data.sample=4"]),
        cache=tmp_path / "cache",
    )
    assert (small.data.limit, small.data.sample) == (50, 4)


def test_free_text_dialogues_are_sampled_unstratified_one_round_each(tmp_path, log_lines):
    from vlmtune.data.example import Example, write_jsonl

    rows = [
        Example(
            id=f"d{d}-r{r}",
            task="dialog",
            target=f"answer {d}.{r}",
            group=f"dialogue-{d}",
            messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": f"answer {d}.{r}"}],
        )
        for d in range(20)
        for r in range(3)
    ]
    path = write_jsonl(tmp_path / "dialogs.jsonl", rows)
    cfg = load_config(None, ["data.source=files", "data.task=dialog", f"data.path={path}", "data.sample=10"])
    lines = log_lines
    kept = read_files(cfg, cfg.data.path)
    assert len(kept) == 10 and len({e.group for e in kept}) == 10  # a round from each of 10 dialogues
    assert "not stratified" in lines[-1]
