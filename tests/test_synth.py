"""The shapes world is deterministic and its answers agree with the scenes it draws."""

from __future__ import annotations

import json
from collections import Counter

from vlmtune.data.example import load_jsonl
from vlmtune.data.synth import CLASSIFY_LABELS, COUNT_MAX, synthesize


def _bytes(d):
    return {p.name: p.read_bytes() for p in sorted((d / "images").glob("*.png"))}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = synthesize("count", 20, tmp_path / "a", seed=7)
    b = synthesize("count", 20, tmp_path / "b", seed=7)
    c = synthesize("count", 20, tmp_path / "c", seed=8)
    assert a.read_text().replace("/a/", "/") == b.read_text().replace("/b/", "/")
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / "c")
    # A larger n extends a smaller one.
    d = synthesize("count", 25, tmp_path / "d", seed=7)
    assert [json.loads(x)["target"] for x in d.read_text().splitlines()[:20]] == [
        json.loads(x)["target"] for x in a.read_text().splitlines()
    ]


def test_count_targets_match_the_scene_and_are_balanced(tmp_path):
    exs = load_jsonl(synthesize("count", 600, tmp_path))
    for ex in exs:
        color = ex.messages[0]["content"].split("How many ")[1].split()[0]
        assert ex.target == sum(s["color"] == color for s in ex.meta["scene"]["shapes"])
        assert ex.answer_text() == str(ex.target)
    freq = Counter(ex.target for ex in exs)
    assert set(freq) == set(range(COUNT_MAX + 1)) and min(freq.values()) > 600 / (COUNT_MAX + 1) * 0.7


def test_classify_label_is_the_majority_kind(tmp_path):
    exs = load_jsonl(synthesize("classify", 200, tmp_path))
    for ex in exs:
        kinds = Counter(s["kind"] for s in ex.meta["scene"]["shapes"])
        top = max(kinds.values())
        winners = [k for k, n in kinds.items() if n == top]
        assert ex.target == (winners[0] + "s" if len(winners) == 1 else "mixed")
        assert ex.options == list(CLASSIFY_LABELS)
    assert set(ex.target for ex in exs) == set(CLASSIFY_LABELS)


def test_captions_state_the_counts(tmp_path):
    from vlmtune.data.synth.shapes import NUMBER_WORDS

    styles = set()
    for ex in load_jsonl(synthesize("caption", 50, tmp_path)):
        shapes = ex.meta["scene"]["shapes"]
        digits = ex.target[0].isdigit()
        styles.add(digits)
        num = str if digits else NUMBER_WORDS.__getitem__
        assert ex.target.startswith(f"{num(len(shapes))} shape")
        per_color = ex.target.split(": ", 1)[1].split(".")[0].replace(" and ", ", ").split(", ")
        # Every colour is stated, absent ones as zero.
        assert per_color == [
            f"{num(sum(s['color'] == c for s in shapes))} {c}" for c in ("red", "green", "blue", "yellow")
        ]
    assert styles == {True, False}  # both ways of writing numbers occur


def test_generator_options_fix_what_is_otherwise_drawn(tmp_path):
    import pytest

    from vlmtune.errors import ConfigError

    plain = load_jsonl(synthesize("mcq", 30, tmp_path / "a"))
    fixed = load_jsonl(synthesize("mcq", 30, tmp_path / "b", options={"lang": "en", "modality": "caption"}))
    assert {ex.meta["lang"] for ex in plain} == {"en", "ko"} and len({ex.meta["modality"] for ex in plain}) == 3
    assert all(ex.meta["lang"] == "en" and ex.meta["modality"] == "caption" and not ex.images for ex in fixed)
    # The same draws are made: the scenes are the same ones.
    assert [ex.meta["scenes"] for ex in plain] == [ex.meta["scenes"] for ex in fixed]
    with pytest.raises(ConfigError, match="no option 'language'.*lang, modality"):
        synthesize("mcq", 2, tmp_path / "c", options={"language": "en"})
    with pytest.raises(ConfigError, match="'fr' is not one of en, ko"):
        synthesize("mcq", 2, tmp_path / "d", options={"lang": "fr"})
    with pytest.raises(ConfigError, match="takes none"):
        synthesize("count", 2, tmp_path / "e", options={"lang": "en"})
