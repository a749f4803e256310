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
    return Example(id="d-r3", task="dialog", messages=item.messages, images=["x.png"], target=item.target,
                   options=item.options, group=meta.pop("group"), meta=meta)


def _with_last_user(ex: Example, text: str, *, question: bool = True) -> Example:
    out = copy.deepcopy(ex)
    prompt = out.prompt_messages()
    prompt[-1]["content"] = text
    out.messages = prompt + out.messages[len(prompt):]
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
    leaked.messages = prompt + [{"role": "assistant", "content": "something"},
                                {"role": "user", "content": "and?"}] + leaked.messages[len(prompt):]
    with pytest.raises(DataError, match="assistant turn"):
        check_no_leak(leaked)
