"""Task "count": the answer is a non-negative integer ("How many people are in this frame?").

Parsing rule: the FIRST number mentioned in the text is the answer; no number -> a parse failure
(never a guess). What counts as a number, scanning left to right:
  - digits: "3", "3.", "3개", "3명" (Hangul glued to digits is fine), "1,204", "3.0"; a non-integer
    such as "2.5" is a failure (a count is whole).
  - English words (any case): zero, one .. nineteen, twenty .. ninety, "twenty-one" / "twenty one";
    "none", "nobody" -> 0; "no" -> 0 only as a determiner ("no red shapes"), not "No, ...", "No." or "no more than".
  - Korean native numerals (하나/한, 둘/두, 셋/세, 넷/네, 다섯 .. 아홉, 열, 스물/스무, 서른 .. 아흔 and
    compounds such as 열두, 스물한). Free forms (하나, 둘, 셋, 다섯, ...) count on their own or
    with a particle/copula ("셋입니다"); the bound forms 한/두/세/네/스무 count only before a counter
    ("세 개", "두명이"), because alone they are ordinary words (네 = "yes", 세 = "age/tax", 한 = "one/Han").
  - Korean Sino numerals (영, 일 .. 구, 십, 백 and compounds such as 이십삼): multi-syllable ones and
    십/영 count on their own or with a counter; other single syllables (일, 이, 삼, ..., 백) count
    only glued to or followed by 개/명, or as the whole answer ("삼."), because alone or glued to
    other counters they are other words (이 = "this", 이번 = "this time", 사장 = "boss", 사명 = "mission").
  - Korean "none": "없음/없습니다/없어요..." -> 0, and "하나도 없다", "한 명도 없어요" -> 0.
Negation and hedging are not understood: "not 3 but 4" parses as 3. Ordinals ("셋째", "first")
are not counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmtune.errors import DataError
from vlmtune.metrics.counting import count_metrics
from vlmtune.registry import TASKS
from vlmtune.tasks.base import REPORT_COLORS, Parsed, ReportSection, Row, Task, row_groups

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# --- English -------------------------------------------------------------------------------------
_EN_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_EN_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_EN_ZERO = {"none": 0, "nobody": 0}
_EN_NOT_DETERMINER = {"more", "fewer", "less", "than"}  # "no more than 5" is not zero

# --- Korean --------------------------------------------------------------------------------------
_KO_UNIT_FREE = {"하나": 1, "둘": 2, "셋": 3, "넷": 4, "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9}
_KO_UNIT_BOUND = {"한": 1, "두": 2, "세": 3, "네": 4, "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9}
_KO_TENS_FREE = {"열": 10, "스물": 20, "서른": 30, "마흔": 40, "쉰": 50, "예순": 60, "일흔": 70, "여든": 80, "아흔": 90}
_KO_TENS_BOUND = {**_KO_TENS_FREE, "스무": 20}


def _native_forms() -> dict[str, tuple[int, bool]]:
    """Every native numeral string -> (value, free). free=False: only valid before a counter."""
    forms: dict[str, tuple[int, bool]] = {}
    for w, v in _KO_UNIT_BOUND.items():
        forms[w] = (v, False)
    for w, v in _KO_UNIT_FREE.items():
        forms[w] = (v, True)
    for tw, tv in _KO_TENS_BOUND.items():
        forms.setdefault(tw, (tv, False))
        if tw == "스무":
            continue  # 스무 is 20 only; 21 is 스물하나 / 스물한
        for uw, uv in _KO_UNIT_BOUND.items():
            forms.setdefault(tw + uw, (tv + uv, False))
        for uw, uv in _KO_UNIT_FREE.items():
            forms[tw + uw] = (tv + uv, True)
    for tw, tv in _KO_TENS_FREE.items():
        forms[tw] = (tv, True)
    return forms


_SINO_DIGITS = ["", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]


def _sino_forms() -> dict[str, int]:
    """Sino-Korean numerals 0..999: 영, 일 .. 구, 십, 이십삼, 백, 삼백오 ..."""
    forms = {"영": 0}
    for v in range(1, 1000):
        h, t, u = v // 100, (v // 10) % 10, v % 10
        s = (_SINO_DIGITS[h] if h > 1 else "") + ("백" if h else "")
        s += (_SINO_DIGITS[t] if t > 1 else "") + ("십" if t else "")
        s += _SINO_DIGITS[u]
        forms[s] = v
    return forms


_NATIVE = _native_forms()
_SINO = _sino_forms()
_MAX_NUMERAL = max(map(len, list(_NATIVE) + list(_SINO)))

# Counters (classifiers) that follow a numeral: 개 items, 명/사람/분 people, 마리 animals, 대 machines ...
_COUNTERS = (
    "개",
    "명",
    "마리",
    "사람",
    "분",
    "대",
    "장",
    "권",
    "채",
    "척",
    "송이",
    "그루",
    "병",
    "잔",
    "켤레",
    "벌",
    "가지",
    "군데",
    "곳",
    "살",
    "번",
    "칸",
    "줄",
    "쌍",
    "알",
    "조각",
    "점",
)
# Particles / copulas that may be glued after a numeral or counter ("세 개입니다", "셋이에요").
_ENDINGS = (
    "입니다",
    "이에요",
    "예요",
    "이요",
    "이다",
    "이야",
    "이고",
    "이며",
    "인데",
    "이네요",
    "네요",
    "이랑",
    "정도",
    "가량",
    "밖에",
    "까지",
    "부터",
    "만큼",
    "으로",
    "이",
    "가",
    "은",
    "는",
    "을",
    "를",
    "의",
    "도",
    "만",
    "뿐",
    "씩",
    "쯤",
    "요",
    "야",
    "임",
    "인",
    "로",
    "과",
    "와",
    "랑",
)
_ENDINGS_RE = re.compile("(?:" + "|".join(_ENDINGS) + ")*")
_COUNTER_RE = re.compile("(?:" + "|".join(sorted(_COUNTERS, key=len, reverse=True)) + ")")
# Sino single syllables are ordinary words too often; these glued forms are words, not counts.
# Only these endings of 없- mean "there is none" (없이 = "without", 없는 = "lacking" are left alone).
_NONE_RE = re.compile("없(?:음|습니다|어요|어|다|네요|고|으며|는데)$")
_SINO_WORDS = {"일명", "이명", "사명", "오명", "구명"}  # "aka", "tinnitus", "mission", "disgrace", "rescue"

# One scan finds candidates left to right: digits, ASCII words, Hangul runs.
_TOKEN_RE = re.compile(r"(?P<num>\d+(?:,\d{3}(?!\d))*(?:\.\d+)?)|(?P<en>[A-Za-z]+)|(?P<ko>[가-힣]+)")
_PUNCT_RE = re.compile(r"[\s.,!?;:。、'\"()\[\]]+")


def _after_counter(rest: str) -> str | None:
    """If `rest` is a counter plus endings ("개입니다"), return the endings; else None."""
    m = _COUNTER_RE.match(rest)
    if not m:
        return None
    tail = rest[m.end() :]
    return tail if _ENDINGS_RE.fullmatch(tail) else None


def _is_none_after(endings: str, following: str) -> bool:
    """'하나도 없다' / '한 명도 없어요': a numeral + 도 then 없... means zero."""
    return endings.endswith("도") and following.startswith("없")


def _korean(run: str, text: str, end: int) -> int | None:
    """Value of a Hangul run (maybe with the counter in the next word), or None if it is no number."""
    if _NONE_RE.match(run):  # 없음, 없습니다, 없어요: "there is none"
        return 0
    nxt = re.match(r"\s+([가-힣]+)", text[end:])
    next_run = nxt.group(1) if nxt else ""
    following = text[end:].lstrip()
    after_next = text[end + nxt.end() :].lstrip() if nxt else ""
    for k in range(min(len(run), _MAX_NUMERAL), 0, -1):  # longest numeral prefix first: 일곱 before 일
        head, rest = run[:k], run[k:]
        if head in _NATIVE:
            value, free = _NATIVE[head]
            if rest:
                ends = _after_counter(rest)
                if ends is None and free and _ENDINGS_RE.fullmatch(rest):
                    ends = rest
                if ends is not None:
                    return 0 if _is_none_after(ends, following) else value
            else:
                ends = _after_counter(next_run)
                if ends is not None:
                    return 0 if _is_none_after(ends, after_next) else value
                if free:
                    return value
        if head in _SINO:
            value = _SINO[head]
            strong = len(head) > 1 or head in ("영", "십")
            if rest:
                ends = _after_counter(rest)
                if ends is not None and (strong or (rest[0] in "개명" and head + rest[0] not in _SINO_WORDS)):
                    return value
                if strong and head != "영" and _ENDINGS_RE.fullmatch(rest):
                    return value
            else:
                ends = _after_counter(next_run)
                # "이 개" reads as "this dog", so a spaced counter after 이 is not a count
                if ends is not None and (strong or (next_run[0] in "개명" and head != "이")):
                    return value
                if strong:
                    return value
    return None


def _english(word: str, text: str, end: int) -> int | None:
    w = word.lower()
    if w in _EN_ZERO:
        return 0
    if w == "no":  # "no red shapes" -> 0; "No, ..." / "No." is an interjection, not a count
        m = re.match(r"\s+([A-Za-z]+)", text[end:])
        return 0 if m and m.group(1).lower() not in _EN_NOT_DETERMINER else None
    if w in _EN_UNITS:
        return _EN_UNITS[w]
    if w in _EN_TENS:
        m = re.match(r"[-\s]([A-Za-z]+)", text[end:])  # twenty-one / twenty one
        unit = _EN_UNITS.get(m.group(1).lower(), 0) if m else 0
        return _EN_TENS[w] + (unit if 0 < unit < 10 else 0)
    return None


def parse_count(text: str) -> Parsed:
    """The first number mentioned in `text` (see the module docstring); Parsed(None, False, text) if none."""
    text = text or ""
    bare = _PUNCT_RE.sub("", text)
    # A lone Sino numeral is an answer ("삼."), though inside a sentence it is usually another word.
    if bare in _SINO:
        return Parsed(_SINO[bare], True, text)
    for m in _TOKEN_RE.finditer(text):
        if m.group("num") is not None:
            num = float(m.group("num").replace(",", ""))
            if not num.is_integer():
                return Parsed(None, False, text)  # "2.5": the first number is not a count; do not round
            return Parsed(int(num), True, text)
        if m.group("en") is not None:
            value = _english(m.group("en"), text, m.end())
        else:
            value = _korean(m.group("ko"), text, m.end())
        if value is not None:
            return Parsed(value, True, text)
    return Parsed(None, False, text)


@TASKS.register("count", help="count objects in an image; answer is an integer")
class CountTask(Task):
    """Counting: target is an int; the first number in the answer is the prediction."""

    name = "count"

    @dataclass
    class Options:
        max_count: int = field(
            default=20,
            metadata={
                "help": "eval.mode=loglik ranks the counts 0..max_count for examples without options",
                "ge": 1,
                "le": 10_000,
            },
        )

    def check_example(self, example: Any) -> None:
        """The target is a whole number >= 0 (a count)."""
        t = example.target
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t != int(t) or t < 0:
            raise DataError(
                f"example '{example.id}': a count target must be a whole number >= 0, got {t!r}",
                field="target",
                fix='give the count as an integer, e.g. "target": 3 (or set data.task to the task the records are for)',
            )

    def default_options(self, example: Any = None) -> list[str]:
        """0..max_count as digits: the answer set for eval.mode=loglik."""
        return [str(i) for i in range(self.options.max_count + 1)]

    def parse(self, text: str, example: Any = None) -> Parsed:
        return parse_count(text)

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        """Absolute error per example (None for a parse failure), for the report's paired bootstrap."""
        return {"abs_error": [abs(int(r["parsed"]) - int(r["target"])) if r["parse_ok"] else None for r in rows]}

    def correct(self, value: Any, example: Any) -> bool:
        return value is not None and int(value) == int(example.target)

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Metrics dict from prediction rows (failures: parse_ok false or parsed null)."""
        gold = [int(r["target"]) for r in rows]
        pred = [int(r["parsed"]) if r.get("parse_ok") and r.get("parsed") is not None else None for r in rows]
        return count_metrics(gold, pred, n_boot=n_boot, seed=seed, groups=row_groups(rows))

    def report_sections(
        self, baseline: Sequence[Row], candidate: Sequence[Row], *, labels: tuple[str, str] = ("baseline", "candidate")
    ) -> list[ReportSection]:
        """The counting-error section: prediction - target per run (a histogram and a table), parse failures apart."""
        runs = [(label, *count_errors(rows)) for label, rows in zip(labels, (baseline, candidate))]
        table = [["run", "MAE on parsed", "mean error (bias)", "parsed", "parse failures"]]
        for label, errs, fails in runs:
            mae = f"{sum(abs(e) for e in errs) / len(errs):.3f}" if errs else "n/a"
            bias = f"{sum(errs) / len(errs):+.3f}" if errs else "n/a"
            table.append([label, mae, bias, str(len(errs)), str(fails)])
        histogram = ErrorHistogram(runs)
        return [
            ReportSection(
                title="Counting errors",
                text=[
                    "Prediction − target over the examples whose answer parsed; answers that could not be read are "
                    "counted apart (they are scored wrong, never guessed). MAE here is over parsed answers only."
                ],
                table=table,
                plot=histogram.draw,
                plot_name="count_errors",
                plot_size=histogram.size,
            )
        ]


def count_errors(rows: Sequence[Row]) -> tuple[list[int], int]:
    """(prediction - target for parsed rows, number of parse failures)."""
    errors, failures = [], 0
    for r in rows:
        p = r.get("parsed")
        if not r.get("parse_ok", True) or not isinstance(p, (int, float)) or isinstance(p, bool):
            failures += 1
        else:
            errors.append(round(p - r["target"]))
    return errors, failures


class ErrorHistogram:
    """Grouped histogram of prediction - target per run (tails clipped at +-clip), plus a parse-failure bar."""

    def __init__(self, runs: list[tuple[str, list[int], int]], clip: int = 10):
        self.runs = runs
        all_err = [e for _, errs, _ in runs for e in errs] or [0]
        self.lo, self.hi, self.clip = max(-clip, min(min(all_err), -1)), min(clip, max(max(all_err), 1)), clip
        self.xs = list(range(self.lo, self.hi + 1))
        self.size = (max(6.0, 0.45 * (len(self.xs) + 3)), 3.6)

    def draw(self, fig: Figure) -> None:
        lo, hi, xs = self.lo, self.hi, self.xs
        fail_x = hi + 2  # a gap separates "could not parse" from the error scale
        ax = fig.subplots()
        width = 0.4
        for k, ((label, errs, fails), color) in enumerate(zip(self.runs, REPORT_COLORS)):
            counts = [sum(1 for e in errs if min(max(e, lo), hi) == x) for x in xs]  # ends collect clipped tails
            mae = sum(abs(e) for e in errs) / len(errs) if errs else float("nan")
            off = (k - 0.5) * width
            ax.bar(
                [x + off for x in xs],
                counts,
                width,
                color=color,
                label=f"{label} (MAE on parsed {mae:.2f}, {fails} parse failures)",
            )
            ax.bar([fail_x + off], [fails], width, color=color, hatch="//", edgecolor="black")
        ticks = [str(x) for x in xs]
        if lo == -self.clip:
            ticks[0] = f"≤{lo}"
        if hi == self.clip:
            ticks[-1] = f"≥{hi}"
        ax.set_xticks(xs + [fail_x], ticks + ["parse\nfailure"], fontsize=8)
        ax.axvline(0, color="black", lw=0.6, ls=":")
        ax.set_xlabel("prediction − target")
        ax.set_ylabel("examples")
        ax.legend(fontsize=8)
