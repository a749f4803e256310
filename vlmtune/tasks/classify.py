"""Task "classify": the answer is one label from a closed set ("Which category is this image?").

The label set is the example's `options` when present, else the `labels` given to the task.

Parsing rule (label TEXT only: a bare index such as "2" is not read as the third option, because a
model that answers with a number is not answering with a label, and guessing which list it meant
would hide that):
  1. Exact: the whole answer equals a label, ignoring case, punctuation and spacing ("Cat." -> cat).
  2. Otherwise find every label written as a whole word/phrase in the answer. Left edge: not inside
     a word. Right edge: not inside a word, except that a Korean label may be followed by glued
     Hangul (particles/copulas: "관련 없음입니다", "마약 투약 사진으로"). Spaces between Hangul
     words of a label are optional ("마약투약 사진"). Where matches overlap, the longer label wins
     ("drug sale" over "drug").
  3. One distinct label found -> that label. None -> parse failure.
     Several different labels -> the first one wins only if it is clear: it opens the answer (after
     an optional lead-in such as "Answer:", "The answer is", "정답은") and ends its sentence
     ("Cat. It is not a dog."). Anything else ("cat or dog", "not a cat but a dog") is a failure.
Negation is not understood when only one label appears: "not a cat" parses as cat.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmtune.errors import ConfigError, DataError
from vlmtune.metrics.classification import classification_metrics
from vlmtune.registry import TASKS
from vlmtune.tasks.base import Parsed, Row, Task, row_groups

_HANGUL = "\uac00-\ud7a3"
_LEAD_IN = re.compile(
    r"^[\W_]*(?:(?:the\s+)?(?:final\s+)?(?:answer|label|category|class|prediction)(?:\s+is)?\s*[:\-]?"
    r"|(?:정답|답|분류|결과)\s*(?:은|는|:)"
    r")?[\W_]*"
)
_OPENERS = " \t\n*\"'“‘(["  # markdown bold, quotes, brackets before the answer
# After the first label: optional glued Hangul (particle/copula), then a sentence end.
_SENTENCE_END = re.compile(rf"[{_HANGUL}]*[*\"'”’)\]]*[ \t]*(?:[.!?。\n]|$)")


def match_end(pattern: re.Pattern[str], text: str, pos: int = 0) -> int:
    """Where `pattern`, which matches the empty string too, stops matching `text` from `pos`."""
    m = pattern.match(text, pos)
    assert m is not None, pattern.pattern
    return m.end()


def normalize(text: str) -> str:
    """Case-folded, NFKC, punctuation -> space, single spaces: the form used for exact comparison."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text).split())


def _label_pattern(norm_label: str) -> re.Pattern[str]:
    """Regex for a normalized label inside case-folded text (see the module docstring for edges)."""
    words = norm_label.split()
    parts = [re.escape(words[0])]
    for prev, word in zip(words, words[1:]):
        hangul_join = re.match(rf"[{_HANGUL}]", prev[-1]) and re.match(rf"[{_HANGUL}]", word[0])
        parts.append(r"[\W_]*" if hangul_join else r"[\W_]+")  # "마약투약" or "drug-sale" / "drug sale"
        parts.append(re.escape(word))
    right = rf"(?![^\W{_HANGUL}])" if re.match(rf"[{_HANGUL}]", words[-1][-1]) else r"(?!\w)"
    return re.compile(r"(?<!\w)" + "".join(parts) + right)


@functools.lru_cache(maxsize=64)
def _compile(labels: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[re.Pattern[str], ...]]:
    norms = tuple(normalize(lab) for lab in labels)
    seen: dict[str, str] = {}
    for lab, norm in zip(labels, norms):
        if not norm:
            raise DataError(
                f"label {lab!r} has no letters or digits", field="options", fix="use labels with visible text"
            )
        if norm in seen:
            raise DataError(
                f"labels {seen[norm]!r} and {lab!r} are the same after normalization ({norm!r})",
                field="options",
                fix="make labels differ in more than case or punctuation",
            )
        seen[norm] = lab
    return norms, tuple(_label_pattern(n) for n in norms)


def parse_label(text: str, labels: Sequence[Any]) -> Parsed:
    """The label named in `text` (rule in the module docstring); Parsed(None, False, text) if unclear."""
    text = text or ""
    keys = tuple(str(lab) for lab in labels)
    norms, patterns = _compile(keys)
    norm_text = normalize(text)
    for lab, norm in zip(labels, norms):
        if norm_text == norm:
            return Parsed(lab, True, text)

    body = unicodedata.normalize("NFKC", text).casefold()
    spans = [(m.start(), m.end(), i) for i, pat in enumerate(patterns) for m in pat.finditer(body)]
    # drop a match that lies inside another label's longer match ("drug" inside "drug sale")
    spans = [
        s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)
    ]
    found = sorted({i for _, _, i in spans})
    if not found:
        return Parsed(None, False, text)
    if len(found) == 1:
        return Parsed(labels[found[0]], True, text)
    start, end, first = min(spans)
    opens = start in (match_end(_LEAD_IN, body), len(body) - len(body.lstrip(_OPENERS)))
    if opens and _SENTENCE_END.match(body, end):
        return Parsed(labels[first], True, text)
    return Parsed(None, False, text)


@TASKS.register("classify", help="pick one label from a closed set; answer is the label text")
class ClassifyTask(Task):
    """Single-label classification: target is a label string; labels from example.options or `labels`."""

    name = "classify"

    @dataclass
    class Options:
        labels: list | None = field(
            default=None,
            metadata={
                "help": "the label set for examples without 'options' (e.g. [cat, dog]); also fixes the label order "
                "of the per-class report and confusion matrix"
            },
        )

    def __init__(self, options: Any = None, **kwargs: Any):
        super().__init__(options, **kwargs)
        self.labels = [str(lab) for lab in self.options.labels] if self.options.labels else None
        if self.labels:
            _compile(tuple(self.labels))  # fail early on clashing labels

    def labels_for(self, example: Any = None) -> list[Any]:
        options = getattr(example, "options", None)
        if options:
            return list(options)
        if self.labels:
            return self.labels
        raise ConfigError(
            "task 'classify' needs a label set: give the examples 'options' "
            "or set the task's labels (data.task_options: {labels: [cat, dog]})"
        )

    def parse(self, text: str, example: Any = None) -> Parsed:
        return parse_label(text, self.labels_for(example))

    def correct(self, value: Any, example: Any) -> bool:
        return value is not None and value == example.target

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        return {}

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Metrics dict from prediction rows (failures: parse_ok false or parsed null)."""
        gold = [r["target"] for r in rows]
        pred = [r["parsed"] if r.get("parse_ok") and r.get("parsed") is not None else None for r in rows]
        return classification_metrics(gold, pred, labels=self.labels, n_boot=n_boot, seed=seed, groups=row_groups(rows))
