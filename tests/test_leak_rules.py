"""The dialogue leak check's rules one by one (tasks/dialog.py check_no_leak): each way the asked round's gold
answer can reach the model input is refused on its own, and the look-alikes that are not leaks pass."""

from __future__ import annotations

import copy
import random

import pytest

from vlmtune.data.example import Example
from vlmtune.data.synth.visdial import dialog_items, make_dialogue
from vlmtune.errors import DataError
from vlmtune.tasks.dialog import check_no_leak, check_target


@pytest.fixture(scope="module")
def asked():
    """Round 3 of a synthetic dialogue: its input ends with the user message that asks question 3."""
    items = list(dialog_items(make_dialogue(random.Random(7))))
    item = items[2]
    meta = dict(item.meta)
    return Example(
        id="d-r3",
        task="dialog",
        messages=item.messages,
        images=["x.png"],
        target=item.target,
        options=item.options,
        group=meta.pop("group"),
        meta=meta,
    )


def _with_last_user(ex: Example, text: str, *, question: bool = True) -> Example:
    out = copy.deepcopy(ex)
    prompt = out.prompt_messages()
    prompt[-1]["content"] = text
    out.messages = prompt + out.messages[len(prompt) :]
    if not question:
        out.meta = {k: v for k, v in out.meta.items() if k != "question"}
    return out


def test_the_clean_round_passes(asked):
    check_no_leak(asked)
    check_target(asked)


@pytest.mark.parametrize("tail", ["{gold}", " {gold}.", " {GOLD}!", "  ({gold})"])
def test_the_gold_answer_after_the_question_is_refused(asked, tail):
    gold, q = asked.target["answer"], asked.meta["question"]
    leaked = _with_last_user(asked, f"{q}" + tail.format(gold=gold, GOLD=gold.upper()))
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(leaked)


@pytest.mark.parametrize("marker", ["A: {gold}", "Answer: {gold}", "assistant - {gold}", "답: {gold}", "ans={gold}"])
def test_a_marked_answer_is_refused_even_without_a_question(asked, marker):
    """No question and no '?': only the marker form ('A: two') can be checked, and it is."""
    gold = asked.target["answer"]
    leaked = _with_last_user(asked, "Tell me about the picture. " + marker.format(gold=gold), question=False)
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(leaked)


def test_without_a_question_an_unmarked_word_is_not_a_leak(asked):
    """The gold words alone, with nothing saying they are the answer, may be ordinary words of the request."""
    gold = asked.target["answer"]
    check_no_leak(_with_last_user(asked, f"Tell me about the picture {gold}", question=False))


def test_the_question_may_hold_the_answers_words(asked):
    """'is it big or small?' holds 'big': only the text after the question is searched."""
    gold, q = asked.target["answer"], asked.meta["question"]
    check_no_leak(_with_last_user(asked, f"{gold} {q}"))
    assert asked.meta["question"] in asked.prompt_messages()[-1]["content"]


def test_a_longer_word_is_not_the_answer(asked):
    """Whole words only: 'twofold' does not contain the answer 'two'."""
    gold, q = asked.target["answer"], asked.meta["question"]
    check_no_leak(_with_last_user(asked, f"{q} {gold}fold"))
    check_no_leak(_with_last_user(asked, f"{q} A: {gold}fold"))


def test_an_extra_assistant_turn_after_the_question_is_refused(asked):
    leaked = copy.deepcopy(asked)
    prompt = leaked.prompt_messages()
    leaked.messages = (
        prompt
        + [{"role": "assistant", "content": "something"}, {"role": "user", "content": "and?"}]
        + leaked.messages[len(prompt) :]
    )
    with pytest.raises(DataError, match="assistant turn"):
        check_no_leak(leaked)


def test_the_refusal_says_how_to_fix_the_record(asked):
    gold, q = asked.target["answer"], asked.meta["question"]
    with pytest.raises(DataError, match="round r's answer belongs only in the final assistant message"):
        check_no_leak(_with_last_user(asked, f"{q} {gold}"))


def test_punctuation_around_a_marked_answer_does_not_hide_it(asked):
    gold = asked.target["answer"]
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(_with_last_user(asked, f"Describe it. Answer:({gold})", question=False))


# --- check_target: the gold answer, its index, the relevance and the round fit the options ---------------------


def _with_target(ex: Example, **changes) -> Example:
    out = copy.deepcopy(ex)
    out.target = {**out.target, **changes}
    return out


def test_gold_index_must_point_into_the_options(asked):
    n = len(asked.options)
    for bad in (True, -1, n, 1.0, None):
        with pytest.raises(DataError, match=r"example 'd-r3' \(round 3\): gt_index .* is not an index"):
            check_target(_with_target(asked, gt_index=bad))
    for i in (0, n - 1):  # both ends are valid indices when the gold answer is there
        opts = list(asked.options)
        opts[i], opts[asked.target["gt_index"]] = opts[asked.target["gt_index"]], opts[i]
        moved = _with_target(asked, gt_index=i)
        moved.options = opts
        check_target(moved)


def test_relevance_needs_one_value_per_option(asked):
    n = len(asked.options)
    check_target(_with_target(asked, relevance=None))
    check_target(_with_target(asked, relevance=[0.0] * n))
    for bad in ([0.0] * (n - 1), "1.0", {"0": 1.0}):
        with pytest.raises(DataError, match="relevance must have one value per option"):
            check_target(_with_target(asked, relevance=bad))


def test_round_is_a_positive_int(asked):
    for bad in (0, -2, "3", 2.0):
        with pytest.raises(DataError, match="round must be an int >= 1"):
            check_target(_with_target(asked, round=bad))


def test_an_answer_turn_after_the_asked_question_is_refused_even_with_the_right_count(asked):
    """Round 2's answer missing and an assistant turn after question 3: the count of answers is right (r - 1),
    but the turn after question 3 can only be round 3's answer."""
    q = asked.meta["question"]
    prompt = asked.prompt_messages()
    first_answer = next(i for i, m in enumerate(prompt) if m["role"] == "assistant")
    leaked = copy.deepcopy(asked)
    leaked.messages = (
        prompt[: first_answer + 1]
        + [
            {"role": "user", "content": "Go on."},
            {"role": "user", "content": q},
            {"role": "assistant", "content": "it is"},
            {"role": "user", "content": "Say more."},
        ]
        + asked.messages[-1:]
    )
    assert sum(m["role"] == "assistant" for m in leaked.prompt_messages()) == 2
    with pytest.raises(DataError, match="answers round 3's question"):
        check_no_leak(leaked)


def test_only_the_text_after_the_last_question_is_searched(asked):
    gold, q = asked.target["answer"], asked.meta["question"]
    # The question asked twice (a flattened history): the gold answer between them is an earlier round's.
    check_no_leak(_with_last_user(asked, f"{q} {gold}. {q}"))
    # Without a known question, the last '?' ends the question: earlier answers before it are history.
    check_no_leak(_with_last_user(asked, f"Is it round? {gold}. Is it {gold}?", question=False))
    check_no_leak(_with_last_user(asked, f"Is the answer {gold}?", question=False))
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(_with_last_user(asked, f"Is it round? {gold}", question=False))
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(_with_last_user(asked, f"? {gold}", question=False))


def test_a_question_without_a_question_mark_still_bounds_the_search(asked):
    gold = asked.target["answer"]
    ex = copy.deepcopy(asked)
    ex.meta = {**ex.meta, "question": "Describe the shape"}
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(_with_last_user(ex, f"Describe the shape {gold}"))
    # A known question that is not in the message: the last '?' is used instead.
    with pytest.raises(DataError, match=r"gives round 3's gold answer"):
        check_no_leak(_with_last_user(ex, f"What is it? {gold}"))


def test_a_malformed_target_is_a_data_error(asked):
    for bad in (None, "two", {"answer": "two"}, {"round": 3}):
        leaked = copy.deepcopy(asked)
        leaked.target = bad
        with pytest.raises(DataError, match="a dialog target must be an object"):
            check_no_leak(leaked)


def test_a_user_follow_up_after_the_asked_question_is_not_an_answer(asked):
    """Only an assistant turn after question r answers it: a second user message (no answer between them) is
    not a leak."""
    prompt = asked.prompt_messages()
    ex = copy.deepcopy(asked)
    ex.messages = prompt + [{"role": "user", "content": "Look at the picture again."}] + asked.messages[-1:]
    check_no_leak(ex)
