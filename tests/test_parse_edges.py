"""Parser edges that mutation testing (scripts/mutation.sh) found unchecked: what the label parser returns on
each path (value, ok, the raw text), Korean multi-word labels inside sentences, overlapping label matches."""

from __future__ import annotations

import pytest

from vlmtune.tasks.classify import parse_label
from vlmtune.tasks.count import parse_count

KO = ["마약 투약", "마약 거래", "관련 없음"]
EN = ["drug sale", "drug use", "irrelevant"]


@pytest.mark.parametrize(
    "text, labels, value",
    [
        ("Drug sale.", EN, "drug sale"),  # exact
        ("I think it shows a drug sale here", EN, "drug sale"),  # one label in the text
        ("Drug sale. It is not drug use.", EN, "drug sale"),  # first label, opening its sentence
        ("drug sale or drug use", EN, None),  # ambiguous
        ("a cat", EN, None),  # none
        ("", EN, None),
    ],
)
def test_every_path_returns_value_ok_and_the_raw_text(text, labels, value):
    p = parse_label(text, labels)
    assert p.value == value and p.ok is (value is not None) and p.raw == text, p


def test_no_text_is_a_failure_with_empty_raw_text():
    p = parse_label(None, EN)
    assert p.value is None and p.ok is False and p.raw == ""


def test_markdown_bold_with_underscores_is_the_label():
    """'__drug sale__' is Markdown bold: the whole answer is the label once punctuation is ignored, though
    underscores glue it to its neighbours as a word pattern."""
    assert parse_label("__drug sale__", EN).value == "drug sale"


@pytest.mark.parametrize(
    "text, value",
    [
        ("이 사진은 마약투약 장면으로 보입니다", "마약 투약"),  # Hangul words of a label glued, particle after it
        ("이 사진은 마약 거래입니다", "마약 거래"),  # copula glued to the label
        ("사진 속 장면은 관련 없음으로 분류됩니다", "관련 없음"),
    ],
)
def test_korean_labels_inside_sentences(text, value):
    assert parse_label(text, KO).value == value


def test_latin_words_of_a_label_need_a_separator():
    assert parse_label("it is a drugsale", EN).ok is False
    assert parse_label("it is a drug-sale", EN).value == "drug sale"
    # Only Hangul next to Hangul may be glued: "CCTV영상" is not "CCTV 영상".
    assert parse_label("이건 CCTV영상 같아요", ["CCTV 영상", "사진"]).ok is False
    assert parse_label("이건 CCTV 영상이에요", ["CCTV 영상", "사진"]).value == "CCTV 영상"
    # A one-letter word after a Hangul word.
    assert parse_label("이건 유형 A 같아요", ["유형 A", "유형 B"]).value == "유형 A"


def test_overlapping_labels_that_do_not_contain_each_other_are_ambiguous():
    """Only a match inside a longer one is dropped; two overlapping matches both count."""
    assert parse_label("we see a drug sale price", ["drug sale", "sale price"]).ok is False
    assert parse_label("the big drug sale", ["the big drug", "drug sale"]).ok is False
    assert parse_label("a drug sale", ["drug", "drug sale"]).value == "drug sale"


def test_only_a_korean_label_may_be_followed_by_glued_hangul():
    """The right edge of a label ending in a Latin letter or digit is a word edge: Hangul glued to it makes
    another word ("CCTV영상"), while a Korean label takes a glued particle ("마약 거래입니다")."""
    assert parse_label("이건 CCTV영상 같아요", ["CCTV", "사진"]).ok is False
    assert parse_label("이건 유형A형 같아요", ["유형 A", "유형 B"]).ok is False
    assert parse_label("이건 CCTV 영상 같아요", ["CCTV", "사진"]).value == "CCTV"


def test_a_label_that_is_also_a_lead_in_word_opens_the_answer():
    """'Answer. Not a question.': the first label starts the answer (no opener before it), though the lead-in
    rule would read 'answer' as 'Answer:'; it ends its sentence, so it wins over the later label."""
    assert parse_label("Answer. It is not a question.", ["answer", "question"]).value == "answer"
    assert parse_label("**Answer**. It is not a question.", ["answer", "question"]).value == "answer"
    assert parse_label("An answer, or a question.", ["answer", "question"]).ok is False


def test_korean_numeral_tables_by_hand():
    """The numeral tables the count parser reads (built once at import) against hand-written forms: every
    Sino-Korean number 0..999 once; native numerals 1..99 with the forms only a counter may follow."""
    from vlmtune.tasks.count import _NATIVE, _SINO, _native_forms, _sino_forms

    sino = _sino_forms()
    assert sino == _SINO and len(sino) == 1000 and sorted(sino.values()) == list(range(1000))
    assert {
        k: sino[k] for k in ("영", "일", "십", "십일", "이십", "이십삼", "백", "백일", "백십", "삼백오", "구백구십구")
    } == {
        "영": 0,
        "일": 1,
        "십": 10,
        "십일": 11,
        "이십": 20,
        "이십삼": 23,
        "백": 100,
        "백일": 101,
        "백십": 110,
        "삼백오": 305,
        "구백구십구": 999,
    }
    native = _native_forms()
    assert native == _NATIVE
    assert {
        k: native[k]
        for k in (
            "한",
            "하나",
            "두",
            "둘",
            "다섯",
            "열",
            "열한",
            "열하나",
            "스무",
            "스물",
            "스물한",
            "스물하나",
            "아흔아홉",
        )
    } == {
        "한": (1, False),
        "하나": (1, True),
        "두": (2, False),
        "둘": (2, True),
        "다섯": (5, True),
        "열": (10, True),
        "열한": (11, False),
        "열하나": (11, True),
        "스무": (20, False),
        "스물": (20, True),
        "스물한": (21, False),
        "스물하나": (21, True),
        "아흔아홉": (99, True),
    }
    assert "스무하나" not in native and "스무한" not in native  # 스무 is 20 alone
    # 13 distinct units (한 두 세 네 bound, 하나 둘 셋 넷 free, 다섯..아홉 both), 10 tens (스무 too), 9 tens x 13 units
    assert len(native) == 13 + 10 + 9 * 13
    assert sorted({v for v, _ in native.values()}) == list(range(1, 100))


@pytest.mark.parametrize(
    "text, value",
    [
        ("두 대학에서 온 학생 다섯 명", 5),  # a counter glued to more than particles ("대학") is no count
        ("There are no Red squares", 0),  # "no" before a capitalized word
        ("Twenty-One shapes", 21),
        ("no more than 5 circles", 5),  # "no more" is not zero
        ("twenty shapes", 20),  # a tens word before a word that is no unit
        ("twenty ten-sided dice", 20),  # only 1..9 join a tens word
        ("다섯 개도 있어요", 5),  # ...도 without 없- after it is not zero
        ("정답은 이십입니다", 20),  # a two-syllable Sino numeral with a copula
        ("영 마리입니다", 0),  # 영 and 십 count before any counter
        ("십 마리", 10),
        ("이십세기 그림에 사람 세 명", 3),  # 이십 glued to other syllables is a word
        ("사장이 고양이 두 마리를 봤어요", 2),  # a one-syllable Sino numeral counts only before 개/명
        ("여기 사는 고양이 세 마리", 3),  # ... and not with a particle alone ("사는")
        ("영이는 고양이 두 마리를 키워요", 2),  # 영 with a particle is a name, not zero
        ("사람이 오 명 있어요", 5),  # a spaced 개/명 after a one-syllable Sino numeral
    ],
)
def test_count_parser_edges(text, value):
    p = parse_count(text)
    assert (p.value, p.ok) == (value, True), p


@pytest.mark.parametrize("text", ["2.5 shapes", "nothing to count", ""])
def test_count_failures_say_ok_false(text):
    p = parse_count(text)
    assert p.value is None and p.ok is False and p.raw == text, p
