"""Property-based tests (Hypothesis) where hand-picked cases are thin: the parsers never guess, ranking metrics
depend only on the scores' order, splits never cut a group, and an Example survives a JSONL round trip.

Runs are derandomized (the same cases on every run, so CI is reproducible). To search further:
`HYPOTHESIS_PROFILE=explore python -m pytest -q tests/test_properties.py` (random cases, 20x as many).
"""

from __future__ import annotations

import json
import math
import os
import string
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vlmtune.data.example import Example, load_jsonl, write_jsonl
from vlmtune.data.splits import check_no_leakage, split_examples
from vlmtune.errors import ConfigError
from vlmtune.metrics.ranking import ndcg, ndcg_metric, rank_of_gt, ranking_metrics, ranks_from_scores
from vlmtune.tasks.classify import parse_label
from vlmtune.tasks.count import parse_count
from vlmtune.tasks.mcq import parse_option

settings.register_profile(
    "default", derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "explore", derandomize=False, deadline=None, max_examples=3000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# --- garbage: text in which no parser rule can find an answer ---------------------------------------------------
# Non-Latin scripts that NFKC / case folding leave non-Latin (fullwidth forms or ligatures would fold into ASCII
# letters, so they are not used), emoji, punctuation and white space. No digits (\d matches every script's digits)
# and no Hangul (Korean numerals and answer words).
PUNCT = " .,!?;:-'\"()[]{}/\\*_#@%&+=<>~|\n\t"
FOREIGN = st.one_of(
    st.characters(min_codepoint=0x391, max_codepoint=0x3C9),  # Greek
    st.characters(min_codepoint=0x410, max_codepoint=0x44F),  # Cyrillic
    st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),  # CJK ideographs
    st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F),
)  # emoji


def garbage(letters: str, min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(st.one_of(st.sampled_from(letters + PUNCT), FOREIGN), min_size=min_size, max_size=max_size)


# Letters that spell no English number word, "no"/"none"/"nobody", or anything glued to digits.
COUNT_FREE = "acjkmpqACJKMPQ"
EN_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()


@given(garbage(COUNT_FREE))
def test_count_parser_never_guesses_on_garbage(text):
    p = parse_count(text)
    assert not p.ok and p.value is None, (text, p)


@given(garbage(COUNT_FREE), garbage(COUNT_FREE), st.integers(0, 10**6), st.booleans())
def test_count_parser_finds_the_one_number_in_garbage(before, after, n, as_word):
    word = EN_UNITS[n % 20] if as_word else str(n)
    p = parse_count(f"{before} {word} {after}")
    assert p.ok and p.value == (n % 20 if as_word else n), (before, word, after, p)


# Labels are spelled with letters the garbage never uses, so no label can appear in it.
LABEL_LETTERS = "bdfghlnrstuw"
labels_st = st.lists(
    st.lists(st.text(LABEL_LETTERS, min_size=1, max_size=6), min_size=1, max_size=3).map(" ".join),
    min_size=2,
    max_size=5,
    unique=True,
)


@given(garbage("acjkmpqxz"), labels_st)
def test_label_parser_never_guesses_on_garbage(text, labels):
    p = parse_label(text, labels)
    assert not p.ok and p.value is None, (text, labels, p)


@given(garbage("acjkmpqxz"), garbage("acjkmpqxz"), labels_st, st.data())
def test_label_parser_finds_the_one_label_in_garbage(before, after, labels, data):
    label = data.draw(st.sampled_from(labels))
    # A label that is a whole-word part of another label is ambiguous when the longer one is not written.
    others = [lab for lab in labels if lab != label]
    assume(not any(f" {label} " in f" {o} " for o in others))
    p = parse_label(f"{before} {label} {after}", labels)
    assert p.ok and p.value == label, (before, label, after, labels, p)


# No A-D (option letters), no letters of "option", "choice", "answer", "first", "second", ... and no digits.
MCQ_FREE = "jkmqxyzJKMQXYZ"


@given(
    garbage(MCQ_FREE),
    st.lists(
        st.text("ghlu w", min_size=1, max_size=12).map(str.strip).filter(bool), min_size=4, max_size=4, unique=True
    ),
)
def test_option_parser_never_guesses_on_garbage(text, options):
    for opts in (options, None):  # with the option texts, and letters only
        p = parse_option(text, opts, n_options=4)
        assert not p.ok and p.value is None, (text, opts, p)


# --- ranking: only the order of the scores matters ---------------------------------------------------------------


@st.composite
def rounds(draw):
    """Scores [R, K] (small integers: ties are common), a gold index and a relevance per round."""
    r, k = draw(st.integers(1, 6)), draw(st.integers(2, 12))
    scores = np.array(
        draw(st.lists(st.lists(st.integers(-4, 4), min_size=k, max_size=k), min_size=r, max_size=r)), dtype=float
    )
    gt = np.array(draw(st.lists(st.integers(0, k - 1), min_size=r, max_size=r)))
    rel = np.array(
        draw(st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=k, max_size=k), min_size=r, max_size=r))
    )
    perms = np.array([draw(st.permutations(range(k))) for _ in range(r)])
    return scores, gt, rel, perms


def _permute(scores, gt, rel, perms):
    """Options reordered per round: new option j is old option perms[r, j]."""
    rows = np.arange(len(scores))[:, None]
    new_gt = np.array([list(p).index(g) for p, g in zip(perms, gt)])
    return scores[rows, perms], new_gt, rel[rows, perms]


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True)  # NaN (a round with no relevant option) compares equal as text


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@given(data=rounds())
def test_ranking_metrics_do_not_depend_on_option_order(ties, data):
    scores, gt, rel, perms = data
    p_scores, p_gt, p_rel = _permute(scores, gt, rel, perms)
    ranks = ranks_from_scores(scores, ties)
    assert _same(ranks_from_scores(p_scores, ties), ranks[np.arange(len(scores))[:, None], perms])
    gold = rank_of_gt(scores, gt, ties)
    assert _same(rank_of_gt(p_scores, p_gt, ties), gold)
    assert _same(gold, ranks[np.arange(len(gt)), gt])  # the gold's rank is its rank in the full ranking
    assert _same(ndcg(p_scores, p_rel, ties), ndcg(scores, rel, ties))
    a, b = ranking_metrics(gold, n_boot=20), ranking_metrics(rank_of_gt(p_scores, p_gt, ties), n_boot=20)
    assert a == b


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@given(data=rounds(), scale=st.integers(1, 50), shift=st.integers(-1000, 1000), cube=st.booleans())
def test_ranking_metrics_do_not_depend_on_score_shifts_or_monotone_maps(ties, data, scale, shift, cube):
    scores, gt, rel, _ = data
    moved = (scores**3 if cube else scores) * scale + shift  # strictly increasing, exact on these integers
    assert _same(ranks_from_scores(moved, ties), ranks_from_scores(scores, ties))
    assert _same(rank_of_gt(moved, gt, ties), rank_of_gt(scores, gt, ties))
    assert _same(ndcg(moved, rel, ties), ndcg(scores, rel, ties))
    assert _json(ndcg_metric(moved, rel, ties, n_boot=20)) == _json(ndcg_metric(scores, rel, ties, n_boot=20))


@given(data=rounds())
def test_tie_rules_bracket_every_tie_break(data):
    """Pessimistic ranks are the worst any tie-breaking could give, optimistic the best; without ties they agree."""
    scores, gt, rel, _ = data
    worst, best = rank_of_gt(scores, gt, "pessimistic"), rank_of_gt(scores, gt, "optimistic")
    assert np.all(best <= worst)
    gold = scores[np.arange(len(gt)), gt]
    tied = (scores == gold[:, None]).sum(1)
    assert np.array_equal(worst - best, tied - 1)
    lo, hi = ndcg(scores, rel, "pessimistic"), ndcg(scores, rel, "optimistic")
    ok = ~np.isnan(lo)
    assert np.all(lo[ok] <= hi[ok] + 1e-12) and np.all((lo[ok] >= -1e-12) & (hi[ok] <= 1 + 1e-12))


# --- splits: a group never spans two splits -----------------------------------------------------------------------

FRACTIONS = [
    {"train": 0.8, "val": 0.1, "test": 0.1},
    {"train": 0.5, "test": 0.5},
    {"train": 0.7225, "val": 0.1275, "test": 0.15},
    {"train": 0.6, "val": 0.4, "test": 0.0},
    {"a": 0.34, "b": 0.33, "c": 0.33},
]


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 60))
    n_groups = draw(st.integers(1, 25))
    labels = draw(st.sampled_from([["x", "y"], ["x", "y", "z", "w"], [0, 1, 2], [None]]))
    exs = []
    for i in range(n):
        g = draw(st.integers(0, n_groups - 1))
        exs.append(
            Example(
                id=f"e{i}",
                task="count",
                messages=[{"role": "user", "content": "q"}],
                target=draw(st.sampled_from(labels)),
                group=draw(st.sampled_from([f"g{g}", None])),
            )
        )
    # Augmented copies carry their own group but must still follow their source.
    for i in draw(st.lists(st.integers(0, n - 1), max_size=6, unique=True)):
        src = exs[i]
        exs.append(
            Example(
                id=f"{src.id}-aug1",
                task="count",
                messages=src.messages,
                target=src.target,
                group=f"aug-{i}",
                meta={"augmented_from": src.id},
            )
        )
    return exs


def _where(splits) -> dict[str, str]:
    return {ex.id: name for name, exs in splits.items() for ex in exs}


@given(
    examples=datasets(),
    fractions=st.sampled_from(FRACTIONS),
    seed=st.integers(0, 2**32 - 1),
    stratify=st.booleans(),
    by=st.sampled_from(["group", "id"]),
    data=st.data(),
)
def test_splits_keep_every_group_together_for_any_data(examples, fractions, seed, stratify, by, data):
    try:
        splits = split_examples(examples, fractions, seed=seed, stratify=stratify, by=by)
    except ConfigError as e:
        assert "would be empty" in str(e)
        assume(False)  # too few groups for these fractions: refused, as documented
    assert list(splits) == list(fractions)
    where = _where(splits)
    # Nothing lost, nothing duplicated, input order kept inside each split.
    assert sorted(where) == sorted(ex.id for ex in examples) and sum(map(len, splits.values())) == len(examples)
    order = {ex.id: i for i, ex in enumerate(examples)}
    for exs in splits.values():
        assert [order[e.id] for e in exs] == sorted(order[e.id] for e in exs)
    # Every group in one split; every augmented copy with its source.
    if by == "group":
        seen: dict[str, set[str]] = defaultdict(set)
        for ex in examples:
            seen[ex.group if ex.group is not None else ex.id].add(where[ex.id])
        assert all(len(s) == 1 for s in seen.values()), {g: s for g, s in seen.items() if len(s) > 1}
    for ex in examples:
        if ex.meta.get("augmented_from"):
            assert where[ex.id] == where[ex.meta["augmented_from"]]
    check_no_leakage(splits, by=by)
    # Unit counts per split are the largest-remainder rounding of fraction x units (each within 1 of its quota).
    units = _units_of(examples, by)
    n_units = len(set(units.values()))
    per_split = Counter(where[root] for root in set(units.values()))
    for name, f in fractions.items():
        assert abs(per_split.get(name, 0) - f * n_units) < 1, (name, per_split, f, n_units)
        if f == 0:
            assert not splits[name]
    # Same data and seed: same split, whatever order the groups come in.
    assert _where(split_examples(examples, fractions, seed=seed, stratify=stratify, by=by)) == where
    shuffled = _shuffle_groups(examples, units, data.draw(st.randoms(use_true_random=False)))
    assert _where(split_examples(shuffled, fractions, seed=seed, stratify=stratify, by=by)) == where


def _units_of(examples, by) -> dict[str, str]:
    """Example id -> id of its unit's first example (a group, joined with augmented copies), computed here."""
    parent = {ex.id: ex.id for ex in examples}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    def join(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=order.get)] = min(ra, rb, key=order.get)

    order = {ex.id: i for i, ex in enumerate(examples)}
    first: dict[str, str] = {}
    for ex in examples:
        if by == "group":
            join(ex.id, first.setdefault(ex.group if ex.group is not None else ex.id, ex.id))
        if ex.meta.get("augmented_from"):
            join(ex.id, ex.meta["augmented_from"])
    return {ex.id: find(ex.id) for ex in examples}


def _shuffle_groups(examples, units, rnd):
    """The same examples with whole units in another order (each unit's examples keep their order)."""
    by_unit: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_unit[units[ex.id]].append(ex)
    keys = list(by_unit)
    rnd.shuffle(keys)
    return [ex for k in keys for ex in by_unit[k]]


# --- the Example record: JSONL round trip -------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30).map(lambda s: s.replace("<image>", ""))
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False, allow_infinity=False), TEXT
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
NAME = st.text(string.ascii_letters + string.digits + "-_ ", min_size=1, max_size=12).map(str.strip).filter(bool)


@st.composite
def examples_st(draw, folder: Path):
    n_images = draw(st.integers(0, 3))
    images = [
        str(folder / draw(st.sampled_from(["", "imgs", "a b/c"])) / f"{draw(NAME)}-{j}.png") for j in range(n_images)
    ]
    # The placeholders go in user messages, spread over them at random, in order.
    n_user = draw(st.integers(1, 3))
    slots = sorted(draw(st.lists(st.integers(0, n_user - 1), min_size=n_images, max_size=n_images)))
    messages = []
    for u in range(n_user):
        parts = [draw(TEXT) for _ in range(slots.count(u) + 1)]
        messages.append({"role": "user", "content": "<image>".join(parts)})
        messages.append({"role": "assistant", "content": draw(TEXT)})
    if draw(st.booleans()):
        messages.insert(0, {"role": "system", "content": draw(TEXT)})
    return Example(
        id=draw(TEXT.filter(bool)),
        task=draw(st.sampled_from(["count", "classify", "mcq", "dialog", "x"])),
        messages=messages,
        images=images,
        target=draw(JSON),
        options=draw(st.one_of(st.none(), st.lists(JSON_LEAF, max_size=5))),
        group=draw(st.one_of(st.none(), TEXT)),
        meta=draw(st.dictionaries(TEXT, JSON, max_size=4)),
    )


@given(data=st.data())
def test_example_round_trips_through_jsonl(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("rt", numbered=True)
    exs = data.draw(st.lists(examples_st(folder), min_size=1, max_size=4, unique_by=lambda e: e.id))
    path = write_jsonl(folder / "data.jsonl", exs)
    back = load_jsonl(path, check_images=False)
    assert len(back) == len(exs)
    for a, b in zip(exs, back):
        assert [str(Path(p).resolve()) for p in b.images] == [str(Path(p).resolve()) for p in a.images]
        assert (b.id, b.task, b.messages, b.target, b.options, b.group, b.meta) == (
            a.id,
            a.task,
            a.messages,
            a.target,
            a.options,
            a.group,
            a.meta,
        )
        assert math.isfinite(len(b.messages))
