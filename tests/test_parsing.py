"""Answer parsers on outputs models really write: count (English + Korean) and classify (English + Korean).

A parse failure must come back as ok=False with value None: never a guess.
"""

from __future__ import annotations

import pytest

from vlmtune.data.example import Example
from vlmtune.errors import ConfigError, DataError
from vlmtune.tasks import build_task
from vlmtune.tasks.caption import token_f1
from vlmtune.tasks.classify import parse_label
from vlmtune.tasks.count import parse_count

COUNT_CASES = [
    # plain digits and what models wrap around them
    ("3", 3),
    ("3.", 3),
    ("  12\n", 12),
    ("There are 3 red shapes.", 3),
    ("The answer is: 7", 7),
    ("I count 4 people in the frame, maybe 5.", 4),  # first number wins
    ("1,204 people", 1204),
    ("3.0", 3),
    ("0", 0),
    ("３", 3),  # full-width digit
    # English words
    ("three", 3),
    ("Three.", 3),
    ("There are eleven circles.", 11),
    ("twenty", 20),
    ("Twenty-one people are visible.", 21),
    ("zero", 0),
    ("none", 0),
    ("None of the shapes are red.", 0),
    ("There are no red shapes.", 0),
    ("No, there are 4.", 4),  # interjection "No," is not zero
    ("Nobody is in the picture.", 0),
    ("I see someone near the door, and two more.", 2),  # "one" inside "someone" is not a number
    # Korean: digits glued to counters
    ("3개", 3),
    ("3명", 3),
    ("사진에는 15명이 있습니다.", 15),
    ("빨간 도형은 3개입니다.", 3),
    # Korean native numerals
    ("세 개", 3),
    ("두 명", 2),
    ("세개입니다", 3),
    ("다섯 명이 있습니다.", 5),
    ("셋", 3),
    ("셋입니다.", 3),
    ("하나", 1),
    ("한 명", 1),
    ("이 이미지에는 사람이 네 명 있습니다.", 4),  # 이 = "this", 이미지 starts with 이: not numbers
    ("네, 세 개입니다.", 3),  # 네 = "yes" is not 4 without a counter
    ("일곱", 7),
    ("여덟명", 8),
    ("아홉 마리의 새가 있어요.", 9),
    ("열", 10),
    ("열두 개", 12),
    ("스무 명", 20),
    ("스물한 명", 21),
    ("서른 명 정도", 30),
    ("셋째 줄에 두 개가 있습니다.", 2),  # 셋째 = "third" is an ordinal
    ("열쇠가 두 개 있다", 2),  # 열쇠 = "key", not 10
    ("사장님 두 분", 2),  # 사장 = "boss", not Sino 4
    # Korean Sino numerals
    ("영 개", 0),
    ("삼.", 3),
    ("오", 5),
    ("십 명", 10),
    ("이십삼 명", 23),
    ("삼개", 3),
    ("이번에는 3개", 3),  # 이번 = "this time"
    # Korean "none"
    ("없음", 0),
    ("사람이 없습니다.", 0),
    ("하나도 없습니다.", 0),
    ("한 명도 없어요.", 0),
    ("망설임 없이 답하면 3개", 3),  # 없이 = "without" is not zero
]

COUNT_FAILURES = [
    "",
    "It is hard to tell.",
    "I cannot count them in this image.",
    "네.",  # "yes" alone
    "No.",
    "2.5",  # not a whole count: not rounded
    "이 개는 귀엽다",  # "this dog is cute"
    "잘 모르겠습니다.",
    "Several shapes.",
    "여러 명이 있습니다.",  # "several people"
]


@pytest.mark.parametrize("text,expected", COUNT_CASES)
def test_count_parses(text: str, expected: int) -> None:
    p = parse_count(text)
    assert p.ok and p.value == expected, (text, p)
    assert isinstance(p.value, int)
    assert p.raw == text


@pytest.mark.parametrize("text", COUNT_FAILURES)
def test_count_failures_are_not_guessed(text: str) -> None:
    p = parse_count(text)
    assert not p.ok and p.value is None, (text, p)
    assert p.raw == text


def test_count_table_is_large_enough() -> None:
    assert len(COUNT_CASES) >= 30
    assert sum(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t, _ in COUNT_CASES) >= 15


def test_count_task_object() -> None:
    task = build_task("count")
    ex = Example(
        id="1", task="count", messages=[{"role": "user", "content": "<image>\nHow many?"}], images=["x.png"], target=3
    )
    assert task.name == "count"
    assert task.parse("세 개", ex).value == 3
    assert task.correct(3, ex) and not task.correct(4, ex) and not task.correct(None, ex)


DRUG = ["관련 없음", "마약 투약 사진", "마약 거래 대화", "마약 실물"]
ANIMALS = ["cat", "dog", "bird", "hot dog"]

CLASSIFY_CASES = [
    ("관련 없음", DRUG, "관련 없음"),
    ("관련 없음입니다.", DRUG, "관련 없음"),  # glued copula
    ("이 이미지는 마약 실물로 보입니다.", DRUG, "마약 실물"),  # glued particle
    ("마약투약 사진", DRUG, "마약 투약 사진"),  # spacing differs
    ("마약 투약 사진으로 판단됩니다.", DRUG, "마약 투약 사진"),
    ("0: 관련 없음", DRUG, "관련 없음"),  # echoes the prompt's numbering
    ("정답은 마약 거래 대화입니다. 관련 없음은 아닙니다.", DRUG, "마약 거래 대화"),  # clear first
    ("Cat.", ANIMALS, "cat"),
    ("BIRD", ANIMALS, "bird"),
    ("It's a dog.", ANIMALS, "dog"),
    ("**Dog**", ANIMALS, "dog"),
    ("Answer: hot dog", ANIMALS, "hot dog"),  # longer label beats "dog"
    ("The image shows a hot dog on a plate.", ANIMALS, "hot dog"),
    ("Cat. It is definitely not a dog.", ANIMALS, "cat"),
    ("The answer is bird. There is no cat.", ANIMALS, "bird"),
]

CLASSIFY_FAILURES = [
    ("cat or dog", ANIMALS),  # two labels, neither clear
    ("This looks like a cat, not a dog", ANIMALS),
    ("I cannot tell.", ANIMALS),
    ("cats", ANIMALS),  # not the whole word "cat"
    ("concatenate", ANIMALS),
    ("2", ANIMALS),  # an index is not a label
    ("1", DRUG),
    ("관련 없음 또는 마약 실물", DRUG),
    ("마약 관련 이미지입니다.", DRUG),  # mentions 마약 but names no label
    ("잘 모르겠습니다.", DRUG),
]


@pytest.mark.parametrize("text,labels,expected", CLASSIFY_CASES)
def test_classify_parses(text: str, labels: list[str], expected: str) -> None:
    p = parse_label(text, labels)
    assert p.ok and p.value == expected, (text, p)


@pytest.mark.parametrize("text,labels", CLASSIFY_FAILURES)
def test_classify_failures_are_not_guessed(text: str, labels: list[str]) -> None:
    p = parse_label(text, labels)
    assert not p.ok and p.value is None, (text, p)


def test_classify_uses_example_options_then_task_labels() -> None:
    ex = Example(
        id="1",
        task="classify",
        messages=[{"role": "user", "content": "<image>\n?"}],
        images=["x.png"],
        target="마약 실물",
        options=DRUG,
    )
    task = build_task("classify", {"labels": ANIMALS})
    assert task.parse("마약 실물입니다", ex).value == "마약 실물"  # options win over task labels
    assert task.parse("a dog", None).value == "dog"
    assert task.correct("마약 실물", ex) and not task.correct(None, ex) and not task.correct("관련 없음", ex)
    with pytest.raises(ConfigError, match="label set"):
        build_task("classify").parse("cat", None)


def test_classify_rejects_labels_that_collide() -> None:
    with pytest.raises(DataError, match="same after normalization"):
        build_task("classify", {"labels": ["Cat", "cat."]})


def test_unknown_task_suggests_the_close_name() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'count'"):
        build_task("cuont")


def test_caption_parse_and_token_f1() -> None:
    task = build_task("caption")
    p = task.parse("  A red circle.\n")
    assert p.ok and p.value == "A red circle."
    assert token_f1("a red circle", "A red circle.") == 1.0
    assert token_f1("a red square", "a red circle") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
