"""Splits: seeded, exact, grouped (no leakage), stratified; and the jsonl reader's skip_invalid rejects."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from PIL import Image

from vlmtune.data.example import Example, JsonlReader, rejects_path_for
from vlmtune.data.formats.jsonl import read_jsonl
from vlmtune.data.splits import check_no_leakage, sample_examples, split_counts, split_examples
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS

F3 = {"train": 0.8, "val": 0.1, "test": 0.1}


def ex(i: int | str, target=None, group: str | None = None, **meta) -> Example:
    return Example(
        id=str(i),
        task="classify",
        messages=[{"role": "user", "content": "q"}],
        target=target,
        group=group,
        meta=dict(meta),
    )


def labelled(n: int, labels: list[str]) -> list[Example]:
    """n singleton-group examples, labels cycling, so each label has n / len(labels) examples."""
    return [ex(f"e{i:04d}", labels[i % len(labels)]) for i in range(n)]


def ids(splits: dict[str, list[Example]]) -> dict[str, list[str]]:
    return {k: [e.id for e in v] for k, v in splits.items()}


def split_of(splits: dict[str, list[Example]]) -> dict[str, str]:
    return {e.id: name for name, exs in splits.items() for e in exs}


# --- determinism ----------------------------------------------------------------------------------------


def test_same_seed_same_split_different_seed_different():
    data = labelled(200, ["cat", "dog"])
    a = split_examples(data, F3, seed=1)
    b = split_examples(data, F3, seed=1)
    c = split_examples(data, F3, seed=2)
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    # Sizes are the same whatever the seed: only membership changes.
    sizes = {"train": 160, "val": 20, "test": 20}
    assert {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in c.items()} == sizes


def test_split_does_not_depend_on_input_order():
    data = labelled(120, ["a", "b", "c"])
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    assert split_of(split_examples(data, F3, seed=5)) == split_of(split_examples(shuffled, F3, seed=5))


def test_every_example_lands_in_exactly_one_split_in_input_order():
    data = labelled(50, ["a", "b"])
    s = split_examples(data, {"train": 0.6, "test": 0.4}, seed=0)
    all_ids = [e.id for v in s.values() for e in v]
    assert sorted(all_ids) == sorted(e.id for e in data)
    order = {e.id: i for i, e in enumerate(data)}
    for v in s.values():
        assert [order[e.id] for e in v] == sorted(order[e.id] for e in v)
    assert list(s) == ["train", "test"]


# --- exact counts ---------------------------------------------------------------------------------------


def test_72_25_12_75_15_on_400_is_exact():
    fr = {"train": 0.7225, "val": 0.1275, "test": 0.15}
    # Unstratified: 289 / 51 / 60 exactly.
    s = split_examples([ex(i) for i in range(400)], fr, seed=0, stratify=False)
    assert {k: len(v) for k, v in s.items()} == {"train": 289, "val": 51, "test": 60}
    # Stratified over 4 labels of 100 (72.25 / 12.75 / 15 each): rounding each label alone would give
    # 72 / 13 / 15 and totals 288 / 52 / 60; the totals stay exact instead, one label taking 73 / 12.
    s = split_examples(labelled(400, ["a", "b", "c", "d"]), fr, seed=0)
    assert {k: len(v) for k, v in s.items()} == {"train": 289, "val": 51, "test": 60}
    per = {k: Counter(e.target for e in v) for k, v in s.items()}
    assert sorted(per["train"].values()) == [72, 72, 72, 73]
    assert sorted(per["val"].values()) == [12, 13, 13, 13]
    assert per["test"] == {lab: 15 for lab in "abcd"}
    assert all(per["train"][lab] + per["val"][lab] == 85 for lab in "abcd")


def test_80_20():
    s = split_examples(labelled(101, ["x", "y"]), {"train": 0.8, "test": 0.2}, seed=3)
    assert (len(s["train"]), len(s["test"])) == (81, 20)  # 80.8 / 20.2 -> largest remainder to train


def test_zero_fraction_gives_empty_split():
    s = split_examples(labelled(10, ["a", "b"]), {"train": 1.0, "val": 0.0}, seed=0)
    assert len(s["train"]) == 10 and s["val"] == []


def test_positive_fraction_that_rounds_to_nothing_is_an_error():
    with pytest.raises(ConfigError, match=r"'test'.*would be empty"):
        split_examples([ex(i) for i in range(5)], F3, seed=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"train": 0.8, "val": 0.1},
        {"train": 0.9, "val": 0.2},
        {"train": 1.2, "val": -0.2},
        {"train": "0.5", "val": 0.5},
        {},
    ],
)
def test_fractions_must_be_valid_and_sum_to_one(bad):
    with pytest.raises(ConfigError):
        split_examples(labelled(20, ["a"]), bad, seed=0)


def test_fractions_error_message_names_the_sum():
    with pytest.raises(ConfigError, match="sum to 1, got 0.9"):
        split_examples(labelled(20, ["a"]), {"train": 0.8, "val": 0.1}, seed=0)


def test_unknown_by_is_a_config_error():
    with pytest.raises(ConfigError, match="by='scene'"):
        split_examples(labelled(20, ["a"]), F3, seed=0, by="scene")


def test_duplicate_ids_are_refused():
    with pytest.raises(DataError, match="duplicate id"):
        split_examples([ex(1), ex(1), ex(2)], {"train": 1.0}, seed=0)


# --- groups ---------------------------------------------------------------------------------------------


def test_groups_stay_together():
    rng = random.Random(0)
    data = [ex(f"g{g}-{k}", "ab"[g % 2], group=f"g{g}") for g in range(60) for k in range(rng.randint(1, 5))]
    for seed in range(5):
        s = split_examples(data, F3, seed=seed)
        where: dict[str, set[str]] = {}
        for name, exs in s.items():
            for e in exs:
                where.setdefault(e.group, set()).add(name)
        assert all(len(v) == 1 for v in where.values())
        # Counts are exact in groups: 60 groups -> 48 / 6 / 6.
        assert {k: len({e.group for e in v}) for k, v in s.items()} == {"train": 48, "val": 6, "test": 6}
        check_no_leakage(s)


def test_augmented_copies_follow_their_source_even_without_a_shared_group():
    base = labelled(40, ["a", "b"])
    # Copies with no group and with a different group: both must stick to the source's split.
    copies = [
        ex(f"{e.id}-aug{k}", e.target, group=(None if k == 0 else f"other-{e.id}"), augmented_from=e.id)
        for e in base
        for k in range(2)
    ]
    for by in ("group", "id"):
        s = split_examples(base + copies, F3, seed=11, by=by)
        where = split_of(s)
        for c in copies:
            assert where[c.id] == where[c.meta["augmented_from"]]
        check_no_leakage(s)


def test_augmented_link_joins_whole_groups_transitively():
    # b0 is a copy of a0 but sits in group B with b1: so a0, a1 (group A), b0, b1 (group B) are one unit.
    data = [
        ex("a0", "x", group="A"),
        ex("a1", "x", group="A"),
        ex("b0", "x", group="B", augmented_from="a0"),
        ex("b1", "y", group="B"),
    ] + [ex(f"o{i}", "xy"[i % 2], group=f"O{i}") for i in range(36)]
    for seed in range(20):
        where = split_of(split_examples(data, F3, seed=seed))
        assert len({where[i] for i in ("a0", "a1", "b0", "b1")}) == 1, seed


def test_by_id_ignores_groups():
    data = [ex(i, group="one-big-group") for i in range(20)]
    with pytest.raises(ConfigError):  # one group cannot be split 50/50
        split_examples(data, {"train": 0.5, "test": 0.5}, seed=0, by="group")
    s = split_examples(data, {"train": 0.5, "test": 0.5}, seed=0, by="id")
    assert (len(s["train"]), len(s["test"])) == (10, 10)
    check_no_leakage(s, by="id")  # the caller asked for it: a group spanning splits is not leakage here
    with pytest.raises(DataError, match="group 'one-big-group'"):
        check_no_leakage(s)


# --- stratification -------------------------------------------------------------------------------------


def test_stratified_proportions_match_per_label():
    # Imbalanced: 300 "common", 60 "rare"; each must be split 80/10/10 on its own.
    data = [ex(f"c{i}", "common") for i in range(300)] + [ex(f"r{i}", "rare") for i in range(60)]
    for seed in range(3):
        s = split_examples(data, F3, seed=seed)
        counts = {k: Counter(e.target for e in v) for k, v in s.items()}
        assert counts["train"] == {"common": 240, "rare": 48}
        assert counts["val"] == {"common": 30, "rare": 6}
        assert counts["test"] == {"common": 30, "rare": 6}


def test_unstratified_split_does_not_preserve_a_rare_label():
    # Sanity check that stratification is doing the work in the test above.
    data = [ex(f"c{i}", "common") for i in range(300)] + [ex(f"r{i}", "rare") for i in range(60)]
    rare_in_test = {
        sum(e.target == "rare" for e in split_examples(data, F3, seed=s, stratify=False)["test"]) for s in range(10)
    }
    assert rare_in_test != {6}


def test_stratum_is_the_groups_first_example_target():
    # Group g has targets [label, "noise"]: it must be stratified by `label`.
    data = []
    for g in range(40):
        data += [ex(f"g{g}-0", "ab"[g % 2], group=f"g{g}"), ex(f"g{g}-1", "noise", group=f"g{g}")]
    s = split_examples(data, {"train": 0.5, "test": 0.5}, seed=0)
    for name in s:
        firsts = Counter(e.target for e in s[name] if e.id.endswith("-0"))
        assert firsts == {"a": 10, "b": 10}


def test_many_singleton_labels_still_give_exact_totals():
    # Free-text targets (all different): not a closed set, so plain random split with exact counts.
    data = [ex(i, f"answer number {i}") for i in range(97)]
    s = split_examples(data, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    # 67.9 / 14.55 / 14.55: train takes the .9; the .55 tie goes to the split listed first.
    assert {k: len(v) for k, v in s.items()} == {"train": 68, "val": 15, "test": 14}
    assert len({e.target for e in s["train"]}) == 68


def test_rare_labels_with_few_examples_keep_totals_exact():
    # 30 labels with 1-3 examples each (a closed set: labels repeat). Rounding each label on its own
    # would send every one of them wholly to train; the per-split totals must stay exact instead.
    data = []
    for lab in range(30):
        data += [ex(f"{lab}-{k}", f"L{lab}") for k in range(1 + lab % 3)]
    assert len(data) == 60
    for seed in range(5):
        s = split_examples(data, F3, seed=seed)
        assert {k: len(v) for k, v in s.items()} == {"train": 48, "val": 6, "test": 6}
        # Labels of size 3 round to 2 / 0 / 0 plus one leftover: no label has more than 1 outside train.
        outside = Counter(e.target for k in ("val", "test") for e in s[k])
        assert max(outside.values()) == 1


# --- leakage check and counts ---------------------------------------------------------------------------


def test_check_no_leakage_catches_a_group_in_two_splits():
    with pytest.raises(DataError, match="group 'scene-1' is in both 'train' and 'test'"):
        check_no_leakage({"train": [ex("a", group="scene-1")], "test": [ex("b", group="scene-1")]})


def test_check_no_leakage_catches_an_id_in_two_splits():
    with pytest.raises(DataError, match="id 'a' is in both 'train' and 'test'"):
        check_no_leakage({"train": [ex("a")], "test": [ex("a")]})


def test_check_no_leakage_catches_an_augmented_copy_across_splits():
    with pytest.raises(DataError, match="augmented copy of 'a'"):
        check_no_leakage({"train": [ex("a-aug", group="g2", augmented_from="a")], "test": [ex("a", group="g1")]})


def test_check_no_leakage_accepts_a_clean_split():
    check_no_leakage({"train": [ex("a", group="g"), ex("a2", group="g")], "val": [ex("b")], "test": []})


def test_split_counts():
    s = {"train": [ex(1, "cat"), ex(2, "cat"), ex(3, "dog")], "test": [ex(4, "dog"), ex(5)]}
    assert split_counts(s) == {
        "train": {"<none>": 0, "cat": 2, "dog": 1, "total": 3},
        "test": {"<none>": 1, "cat": 0, "dog": 1, "total": 2},
    }
    capped = split_counts({"train": [ex(i, f"t{i % 4}") for i in range(9)]}, max_labels=2)
    assert capped == {"train": {"t0": 3, "t1": 2, "<other>": 4, "total": 9}}


def test_split_counts_keeps_the_most_frequent_labels_twenty_by_default():
    s = {"train": [ex(i, lab) for i, lab in enumerate("zzzabyy")]}
    assert split_counts(s, max_labels=2) == {"train": {"y": 2, "z": 3, "<other>": 2, "total": 7}}
    row = split_counts({"train": [ex(i, f"l{i:02d}") for i in range(21)]})["train"]
    assert len(row) == 22 and row["<other>"] == 1 and "l20" not in row and row["total"] == 21


def test_a_sample_of_as_many_records_as_labels_holds_each_label_once():
    """10 cats, 1 dog, 1 bird: proportional counts would take cats only; every label gets one when n allows,
    taken from the largest label's share, and the sample has exactly n records."""
    examples = [ex(f"c{i}", "cat") for i in range(10)] + [ex("d", "dog"), ex("b", "bird")]
    for n, want in ((3, {"cat": 1, "dog": 1, "bird": 1}), (6, {"cat": 4, "dog": 1, "bird": 1}), (2, {"cat": 2})):
        sample, how = sample_examples(examples, n, seed=0)
        assert Counter(e.target for e in sample) == want, n
        assert how == f"stratified over 3 labels, {n} group(s)", how
    sample, how = sample_examples([ex(i, f"answer {i}") for i in range(6)], 4, seed=0)
    assert len(sample) == 4 and how == "not stratified: no closed label set, 4 group(s)"


# --- jsonl reader: skip_invalid writes a rejects file --------------------------------------------------


def _good(i: int) -> dict:
    return {
        "id": f"r{i}",
        "task": "count",
        "images": ["img.png"],
        "messages": [{"role": "user", "content": "<image>\nHow many?"}, {"role": "assistant", "content": "1"}],
        "target": 1,
    }


def test_jsonl_is_registered():
    assert "jsonl" in FORMATS and FORMATS.get("jsonl") is read_jsonl


def test_skip_invalid_counts_and_writes_rejects(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "img.png")
    bad_role = _good(3) | {"messages": [{"role": "bot", "content": "<image>"}]}
    lines = [
        json.dumps(_good(1)),
        "{not json",
        json.dumps(_good(2)),
        json.dumps(bad_role),
        json.dumps(_good(1)),
        "",
        json.dumps(_good(4) | {"images": ["missing.png"]}),
        json.dumps(_good(5)),
    ]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Strict (the default) stops at the first bad line instead.
    with pytest.raises(DataError) as ei:
        list(read_jsonl(p))
    assert ei.value.line == 2
    with p.open("ab") as f:
        f.write(b'{"id": "\xff\xfe"}\n')  # line 9: not UTF-8 (strict iter_jsonl crashes on it, see test_example)

    reader = read_jsonl(p, skip_invalid=True)
    assert isinstance(reader, JsonlReader)
    got = [e.id for e in reader]
    assert got == ["r1", "r2", "r5"]
    assert reader.rejected == 5
    assert reader.rejects_path == rejects_path_for(p) == tmp_path / "d.jsonl.rejects.jsonl"
    rows = [json.loads(ln) for ln in reader.rejects_path.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [2, 4, 5, 7, 9]
    assert set(rows[0]) == {"line", "error", "raw"}
    assert rows[0]["raw"] == "{not json" and "not valid JSON" in rows[0]["error"]
    assert "role 'bot'" in rows[1]["error"]
    assert "duplicate id 'r1'" in rows[2]["error"]
    assert "image not found" in rows[3]["error"]
    assert "not valid UTF-8" in rows[4]["error"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file behind


def test_skip_invalid_on_a_clean_file_removes_a_stale_rejects_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "img.png")
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(_good(1)) + "\n", encoding="utf-8")
    rejects_path_for(p).write_text('{"line": 1, "error": "old", "raw": ""}\n')
    reader = read_jsonl(p, skip_invalid=True)
    assert [e.id for e in reader] == ["r1"]
    assert reader.rejected == 0 and reader.rejects_path is None
    assert not rejects_path_for(p).exists()


def test_skip_invalid_still_fails_on_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        list(read_jsonl(tmp_path / "nope.jsonl", skip_invalid=True))


def test_leftover_groups_go_to_the_largest_remainders():
    """Labels x, y, z with 2, 3 and 5 groups at 70/30: quotas 1.4/0.6, 2.1/0.9 and 3.5/1.5. After the floors, one
    train and two test groups are left; by largest remainder they go to y's and x's test share (0.9, 0.6) and
    z's train share (0.5, tied with z's test share but z can take only one): test holds one of each label."""
    examples = [ex(f"{lab}{i}", lab) for lab, n in (("x", 2), ("y", 3), ("z", 5)) for i in range(n)]
    for seed in range(10):
        s = split_examples(examples, {"train": 0.7, "test": 0.3}, seed=seed)
        assert Counter(e.target for e in s["test"]) == {"x": 1, "y": 1, "z": 1}, seed
        assert Counter(e.target for e in s["train"]) == {"x": 1, "y": 2, "z": 4}, seed


def test_equal_remainders_are_broken_by_the_seed_not_by_the_label():
    """Six labels of two groups at 75/25: every label's test quota is 0.5 and three of them get a test group;
    which three depends on the seed (a fixed order would always put the same labels in test)."""
    examples = [ex(f"{lab}{i}", lab) for lab in "abcdef" for i in range(2)]
    chosen = set()
    for seed in range(8):
        test = split_examples(examples, {"train": 0.75, "test": 0.25}, seed=seed)["test"]
        assert len(test) == 3 and len({e.target for e in test}) == 3, seed
        chosen.add(frozenset(e.target for e in test))
    assert len(chosen) > 1, chosen


def test_the_split_log_line_says_open_ended_targets_instead_of_listing_them():
    from vlmtune.data.prepare import _labels_summary

    assert _labels_summary({"3": 30, "0": 26, "total": 56}) == "total: 56, 3: 30, 0: 26"
    open_ended = {f"answer {i}": 1 for i in range(20)} | {"<other>": 80, "total": 100}
    assert _labels_summary(open_ended) == "total: 100, open-ended targets (no label repeats)"
