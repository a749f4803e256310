"""Parsing a multiple-choice answer: which option (A-D, 1-4, ordinals, the option's text, in English and Korean) a
generated answer chose, or a parse failure; never a guess. Used by `vlmtune.tasks.mcq`.

    parse_option("The answer is B) the red circle.", options)   # Parsed(value=1, ok=True, raw=...)
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from vlmtune.tasks.base import Parsed
from vlmtune.tasks.classify import _label_pattern, match_end, normalize

LETTERS = "ABCD"
PARSE_FAILURE = "parse_failure"
SCORE_NAMES = ("accuracy", "photo_accuracy", "exact_match", "parse_failure_rate")
_CONFLICT = -1

_HANGUL = "\uac00-\ud7a3"
_CIRCLED = {"①": " 1번 ", "②": " 2번 ", "③": " 3번 ", "④": " 4번 "}  # NFKC would make them bare digits
_NOT_LATIN = r"(?<![A-Za-z0-9'’])"
# Korean words after "N번"/"N번째" that make it a line/photo number, not an option number.
_NOT_OPTION_NOUN = r"(?!\s*(?:발화|줄|문장|대사|턴|사진|말|그림|질문))"

# Letter markers (group L). Searched on the text with option texts blanked out.
_LETTER_RES = (
    re.compile(r"[(\[（]\s*(?P<L>[A-Da-d])\s*[)\]）]"),  # (b) [B]
    re.compile(_NOT_LATIN + r"(?P<L>[A-Da-d])(?:\)|\.(?![A-Za-z0-9]))"),  # B) b.
    re.compile(
        _NOT_LATIN + r"(?P<L>[A-Da-d])\s?(?=번(?!째)|입니다|이다|예요|이에요|이요"
        rf"|(?:요|임)(?![{_HANGUL}]))"
    ),  # B번 B입니다
    re.compile(_NOT_LATIN + r"(?P<L>[A-D])(?=[*\"'”’]*\s*(?:$|[,!?;\n]))"),  # I choose B
    re.compile(
        r"(?:(?i:\b(?:option|choice|letter))|보기|선택지|선지)\s*[:#]?\s*[(\[]?(?P<L>[A-Da-d])"
        r"(?![A-Za-z0-9'’])"
    ),  # option B, 보기 B
)
# Hedging between letters ("A or B", "B/C", "C 또는 D"): both letters are markers, so the answer fails.
_ALTERNATIVES = re.compile(
    _NOT_LATIN + r"(?P<L>[A-D])\)?\s*(?:or|/|또는|아니면|혹은)\s*\(?(?P<L2>[A-D])"
    r"(?![A-Za-z0-9'’])"
)
# Digit / ordinal markers (group D: 1-based number).
_DIGIT_RES = (
    re.compile(r"(?<![0-9.,])(?P<D>[0-9])\s*번(?:\s*째)?" + _NOT_OPTION_NOUN),  # 2번 2번째
    re.compile(r"(?i:\b(?:option|choice|no\.|number)\s*#?\s*(?P<D>[0-9])(?![0-9]))"),  # option 2
    re.compile(r"(?<![0-9])#(?P<D>[0-9])(?![0-9])"),
)
_ORDINAL_RES = (
    (
        re.compile(r"(?i:\b(?P<O>first|second|third|fourth)\s+(?:option|choice|one)\b)"),
        {"first": 1, "second": 2, "third": 3, "fourth": 4},
    ),
    (
        re.compile(rf"(?<![{_HANGUL}])(?P<O>첫|두|세|네)\s*번째" + _NOT_OPTION_NOUN),
        {"첫": 1, "두": 2, "세": 3, "네": 4},
    ),
)
_WHOLE_LETTER = re.compile(r"^[\W_]*(?P<L>[A-Da-d])[\W_]*$")

# Answer statements: a lead-in directly before a marker, or a marker directly before "정답"/"is correct".
_LEAD_IN = re.compile(
    r"(?i:\b(?:(?:the\s+)?(?:final|correct|right)\s+)?answer\b(?:\s*(?:is|would\s+be|will\s+be|should\s+be))?"
    r"|\b(?:the\s+)?(?:correct|right)\s+(?:option|choice)(?:\s+is)?"
    r"|\bI\s*(?:would|will|'d|’d)?\s*(?:choose|pick|select|go\s+with))"
    rf"|(?<![{_HANGUL}])(?:정답|답)(?:\s*(?:은|는|:|=))?"
)
_GAP = re.compile(r"(?i:[\W_]*(?:(?:option|choice|letter|the)\b[\W_]*|(?:보기|선택지|선지)[\W_]*)?)")
_POST_ANSWER = re.compile(
    r"(?i:\)?[\s*]*(?:(?:이|가)\s*정답|(?:는|은)\s*정답|is\s+(?:the\s+)?(?:correct|right)\b"
    r"|is\s+the\s+answer\b))"
)
# A letter that is a speaker elsewhere ("B가 ...") but is the answer here: "B가 정답", "B is correct".
_POST_LETTER = re.compile(
    _NOT_LATIN + r"(?:(?P<L>[A-Da-d])\)?\s*(?:이|가|는|은)\s*정답"
    r"|(?P<U>[A-D])\)?\s+is\s+(?:the\s+)?(?:correct|right|answer)\b)"
)
_AFTER_LETTER = re.compile(r"[\s).:\]\-*]*")
_LEADING_LETTER = re.compile(r"^\s*(?:[(\[]\s*[A-Da-d]\s*[)\]]|[A-Da-d]\s*[).:])\s*")


def _casefold_keep_length(text: str) -> str:
    """Case-folded text with the same length as `text`, so spans line up with the original."""
    return "".join(c.casefold() if len(c.casefold()) == 1 else c for c in text)


def _core(option: str) -> str:
    """The normalized option text used for matching: a leading English article may be left out."""
    norm = normalize(option)
    return norm[4:] if norm.startswith("the ") and len(norm) > 4 else norm


@functools.lru_cache(maxsize=256)
def _option_patterns(options: tuple[str, ...]) -> tuple[re.Pattern[str] | None, ...]:
    cores = [_core(o) for o in options]
    # an option whose core equals another's (or is empty) cannot be told apart by its text
    return tuple(_label_pattern(c) if c and cores.count(c) == 1 else None for c in cores)


def _text_spans(body: str, options: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """(start, end, option index) of every option text in `body`; a span inside a longer one is dropped."""
    spans = [
        (m.start(), m.end(), i)
        for i, pat in enumerate(_option_patterns(options))
        if pat is not None
        for m in pat.finditer(body)
    ]
    return [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)]


def _markers(text: str, options: tuple[str, ...], k: int) -> tuple[list[tuple[int, int, int, str]], str]:
    """All markers (start, end, option index, kind) sorted by position, and the text with option texts
    blanked out (same length)."""
    found = [(s, e, i, "text") for s, e, i in _text_spans(_casefold_keep_length(text), options)]
    masked = list(text)
    for s, e, _, _ in found:
        masked[s:e] = " " * (e - s)
    blank = "".join(masked)
    for pat in _LETTER_RES:
        for m in pat.finditer(blank):
            idx = LETTERS.find(m.group("L").upper())
            if idx < k:
                found.append((m.start(), m.end(), idx, "letter"))
    for m in _ALTERNATIVES.finditer(blank):
        for group in ("L", "L2"):
            idx = LETTERS.find(m.group(group))
            if idx < k:
                found.append((m.start(group), m.end(group), idx, "letter"))
    for pat in _DIGIT_RES:
        for m in pat.finditer(blank):
            idx = int(m.group("D")) - 1
            if 0 <= idx < k:
                found.append((m.start(), m.end(), idx, "digit"))
    for pat, table in _ORDINAL_RES:
        for m in pat.finditer(blank):
            idx = table[m.group("O").lower()] - 1
            if idx < k:
                found.append((m.start(), m.end(), idx, "digit"))
    return sorted(found), blank


def _with_echo(marker: tuple[int, int, int, str], markers: list, text: str) -> tuple[int, int]:
    """A letter/digit marker followed directly by an option text: (index or _CONFLICT, end of the unit)."""
    s, e, idx, kind = marker
    if kind == "text":
        return idx, e
    after = match_end(_AFTER_LETTER, text, e)
    for s2, e2, idx2, kind2 in markers:
        if kind2 == "text" and s2 == after:
            return (idx if idx2 == idx else _CONFLICT), e2
    return idx, e


def _stated_answers(text: str, blank: str, markers: list, k: int) -> list[int]:
    """Options named by answer statements (lead-in + marker, or marker + "정답"/"is correct")."""
    answers = []
    for m in _LEAD_IN.finditer(blank):
        gap_end = match_end(_GAP, text, m.end())
        for mk in markers:
            if m.end() <= mk[0] <= gap_end:
                answers.append(_with_echo(mk, markers, text)[0])
                break
    for mk in markers:
        idx, end = _with_echo(mk, markers, text)
        if _POST_ANSWER.match(text, end):
            answers.append(idx)
    for m in _POST_LETTER.finditer(blank):
        idx = LETTERS.find((m.group("L") or m.group("U")).upper())
        if idx < k:
            answers.append(idx)
    return answers


def parse_option(text: str, options: Sequence[Any] | None = None, n_options: int | None = None) -> Parsed:
    """The option named in `text` as a 0-based index (rule in the module docstring); failure -> value None."""
    raw = text or ""
    opts = tuple(str(o) for o in options) if options else ()
    k = min(len(LETTERS), n_options or len(opts) or len(LETTERS))
    t = raw
    for c, rep in _CIRCLED.items():
        t = t.replace(c, rep)
    t = unicodedata.normalize("NFKC", t)
    whole = _WHOLE_LETTER.match(t)
    if whole and LETTERS.find(whole.group("L").upper()) < k:
        return Parsed(LETTERS.index(whole.group("L").upper()), True, raw)
    markers, blank = _markers(t, opts, k)
    stated = _stated_answers(t, blank, markers, k)
    if stated:
        if _CONFLICT in stated or len(set(stated)) > 1:
            return Parsed(None, False, raw)
        return Parsed(stated[0], True, raw)
    named = {idx for _, _, idx, _ in markers}
    if len(named) == 1:
        return Parsed(named.pop(), True, raw)
    return Parsed(None, False, raw)


def exact_match(prediction: str, gold_option: str) -> bool:
    """The raw prediction, minus a leading letter marker ("B) ", "(b) "), equals the gold option text
    after normalization. Extra words, a repeated answer or an echoed option list are not exact."""
    body = _LEADING_LETTER.sub("", unicodedata.normalize("NFKC", prediction or ""), count=1)
    return bool(normalize(gold_option)) and normalize(body) == normalize(gold_option)
