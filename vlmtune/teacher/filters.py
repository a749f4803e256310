"""Quality filters for a teacher's outputs: every check counted, every rejection kept with its reasons.

    out = parse_output(text, block="reminder")      # preamble, block text, answer, how many blocks, closed?
    reasons = check(out, finish_reason, example, task, later, fcfg)   # [] = accepted

Checks, in order (an output can fail several; each failure is counted under its name):
  finish        the server stopped for another reason than "stop" (a length-cut answer) or the input was cut
  format        exactly one <block>...</block>, closed, nothing before it (no "Okay, here's..." preamble,
                outside or at the start of the block), and a non-empty answer after it
  length        block words within [min_words, max_words]; answer words <= max_answer_words
  agreement     the teacher's answer, parsed by the task, agrees with the gold answer: task.agreement() >=
                min_relevance (dialog: the gold, or an option of at least that dense relevance)
  future        nothing from later rounds of the same dialogue (their questions, or answers the history lacks)
  grounding     the block mentions only what the dialogue so far says, and restates the question actually asked
                (see `ungrounded`). Closed worlds (task.grounding_vocabulary: the shapes world) are checked exactly;
                elsewhere by the overlap of content words (not stop words or words about the conversation itself)
  language      the block and answer are written in the expected script (en: Latin, ko: Hangul; any: no check)
  duplicate     the same block and answer as an earlier accepted output for another input
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any

from vlmtune.data.example import Example
from vlmtune.errors import ConfigError
from vlmtune.tasks.base import Task

CHECKS = ("finish", "format", "length", "agreement", "future", "grounding", "language", "duplicate")
# Openers a chat model writes before doing what it was asked ("Okay, here's the response...").
PREAMBLE = re.compile(
    r"^\s*(okay|ok|sure|certainly|of course|here'?s|here is|alright|absolutely)\b[ ,!:.]", re.IGNORECASE
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Words about the conversation rather than the picture: a reminder may use them freely.
META_WORDS = frozenset(
    """
user human asks asked asking ask now question questions final current last earlier previous prior conversation
conversations turn turns dialogue dialog picture image photo photograph scene established confirmed mentioned
said says told answer answered answers reply recall recalls summary whether also already still focused focus
focusing detail details regarding about series progressively first next then yes no not
""".split()
)
# Words that mark a sentence restating the current question.
ASKING = frozenset("asks asking question wants wondering inquires now".split())  # not "asked", "questions"
STOP_WORDS = frozenset(
    """
the and for are but was were has have had his her its our their they them this that these those there here with
from into onto what which who whom whose when where why how any some all each both few more most other such only
own same than too very can will just should would could may might must does did doing done being been is be a an
of to in on at by as it or if so we you your i me my mine he she him hers yours them us one ones is're 's
""".split()
)


@dataclass
class FilterConfig:
    """The bounds of the checks (teach.filters). A check listed in `skip` is not run and not counted (YAML reads a bare `off` as false, hence the name)."""

    min_words: int = 3
    max_words: int = 120
    max_answer_words: int = 12
    min_relevance: float = 1.0
    min_overlap: float = 0.4
    min_question_overlap: float = 0.75
    language: str = "en"
    skip: list = field(default_factory=list)

    @classmethod
    def of(cls, values: dict[str, Any]) -> FilterConfig:
        from vlmtune.config import coerce_fields

        cfg = cls(**coerce_fields(cls, dict(values), "teach.filters"))
        unknown = set(cfg.skip) - set(CHECKS)
        if unknown:
            raise ConfigError(
                f"teach.filters.skip names unknown check(s) {sorted(unknown)}; checks: {', '.join(CHECKS)}"
            )
        if cfg.language not in ("en", "ko", "any"):
            raise ConfigError(f"teach.filters.language is {cfg.language!r}; choose en, ko or any")
        return cfg


def describe_filters() -> str:
    """The filter fields with their defaults (for `vlmtune ls`)."""
    return "\n".join(f"  teach.filters.{f.name:<18} {getattr(FilterConfig(), f.name)!r}" for f in fields(FilterConfig))


@dataclass
class Output:
    """A teacher's text, split: what came before the block, the block's text, the answer after it."""

    raw: str
    preamble: str
    block: str | None
    answer: str
    n_open: int
    n_close: int


def parse_output(text: str, block: str = "reminder") -> Output:
    raw = text or ""
    open_t, close_t = f"<{block}>", f"</{block}>"
    low = raw.lower()
    n_open, n_close = low.count(open_t), low.count(close_t)
    start = low.find(open_t)
    if start < 0:
        return Output(raw, raw.strip(), None, "", n_open, n_close)
    end = low.find(close_t, start)
    if end < 0:
        return Output(raw, raw[:start].strip(), raw[start + len(open_t) :].strip(), "", n_open, n_close)
    answer = raw[end + len(close_t) :].strip()
    return Output(raw, raw[:start].strip(), raw[start + len(open_t) : end].strip(), answer, n_open, n_close)


def words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", text)


def _stem(w: str) -> str:
    w = w.split("'")[0]
    if w.isdigit() and int(w) < len(NUMBER_WORDS):
        return NUMBER_WORDS[int(w)]
    for suf in ("ing", "es", "ed", "s"):
        if len(w) > len(suf) + 2 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def _content(text: str) -> list[str]:
    out = []
    for w in words(text):
        base = w.split("'")[0]  # "user's" -> "user"
        if len(base) > 2 and base not in STOP_WORDS and base not in META_WORDS:
            out.append(_stem(base))
    return out


def dialogue_text(example: Example) -> str:
    """What the student's input says: every prompt message (caption, earlier rounds, the question)."""
    return "\n".join(m["content"] for m in example.prompt_messages())


def ungrounded(block: str, example: Example, task: Task, min_overlap: float, min_question: float = 0.75) -> list[str]:
    """What the block says that the dialogue does not.

    - A sentence restating the current question ("Now: ...", "the user asks ...", "the final question is ...")
      must be about the question asked: at least `min_question` of its content words occur in that question
      (seed 001's teacher wrote "the user's final question is: 'Is there a sign?'" for "is there trees").
    - Closed worlds (task.grounding_vocabulary, the shapes world), exactly: every content word of the block
      occurs in the dialogue, the world's words (colours, kinds, numbers, sizes) included.
    - Open worlds, by overlap: at least `min_overlap` of the block's content words occur in the dialogue."""
    known = {_stem(w) for w in words(dialogue_text(example))}
    asked = set(_content(_current_question(example)))
    bad = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", block):
        if set(words(sentence)) & ASKING:
            content = _content(sentence)
            if content and asked and sum(c in asked for c in content) / len(content) < min_question:
                bad.append(f"not the question asked: {sentence.strip()}")
    vocab = task.grounding_vocabulary(example)
    if vocab is not None:
        stems = {_stem(v) for v in vocab}
        missing = {w for w in words(block) if _stem(w) in stems and _stem(w) not in known}
        missing |= {c for c in _content(block) if c not in known}
        if missing:
            bad.append("not in the dialogue: " + ", ".join(sorted(missing)))
        return bad
    content = _content(block)
    if content and sum(c in known for c in content) / len(content) < min_overlap:
        bad.append(f"{sum(c in known for c in content)} of {len(content)} content words in the dialogue")
    return bad


def _current_question(example: Example) -> str:
    msgs = example.prompt_messages()
    last = msgs[-1]["content"].strip().splitlines() if msgs else []
    return last[-1] if last else ""


def from_future(block: str, example: Example, later: list[dict[str, str]]) -> list[str]:
    """Later rounds' questions (most of their content words) or answers (not in the history) found in the block."""
    known = {_stem(w) for w in words(dialogue_text(example))}
    have = {_stem(w) for w in words(block)}
    hits = []
    for rnd in later:
        q = set(_content(rnd["question"])) - known
        if q and len(q & have) / len(q) >= 0.75:
            hits.append(f"Q: {rnd['question']}")
        a = set(_content(rnd["answer"])) - known
        if len(a) >= 1 and a <= have:
            hits.append(f"A: {rnd['answer']}")
    return hits


def script_ok(text: str, language: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    if language == "any" or not letters:
        return True
    hangul = sum("\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e" for ch in letters)
    latin = sum(ch.isascii() for ch in letters)
    if language == "ko":
        return hangul / len(letters) >= 0.5
    return latin / len(letters) >= 0.9


@dataclass
class Verdict:
    """The reasons an output was rejected (empty: accepted) and what each check found."""

    reasons: list[str]
    details: dict[str, str]


def check(
    out: Output,
    finish_reason: str | None,
    input_truncated: bool,
    example: Example,
    task: Task,
    later: list[dict[str, str]],
    fcfg: FilterConfig,
) -> Verdict:
    """Run every check that is not skipped (duplicates are found across outputs, by `mark_duplicates`)."""
    found: dict[str, str] = {}
    if finish_reason != "stop":
        found["finish"] = f"finish_reason={finish_reason}"
    elif input_truncated:
        found["finish"] = "the server cut the input (usage.prompt_tokens)"
    fmt = []
    if out.block is None:
        fmt.append("no <block>")
    elif out.n_close == 0:
        fmt.append("no closing tag")
    if out.n_open > 1 or out.n_close > 1:
        fmt.append(f"{out.n_open} blocks")
    if out.preamble:
        fmt.append(f"text before the block: {out.preamble[:60]!r}")
    elif out.block and PREAMBLE.match(out.block):
        fmt.append(f"the block opens with a preamble: {out.block[:40]!r}")
    if out.block is not None and out.n_close and not out.answer:
        fmt.append("no answer after the block")
    if fmt:
        found["format"] = "; ".join(fmt)
    block_text = out.block or ""
    nb, na = len(words(block_text)), len(words(out.answer))
    if out.block is not None and not (fcfg.min_words <= nb <= fcfg.max_words) or na > fcfg.max_answer_words:
        found["length"] = (
            f"{nb} block words (bounds {fcfg.min_words}-{fcfg.max_words}), {na} answer words "
            f"(at most {fcfg.max_answer_words})"
        )
    if out.answer:
        parsed = task.parse(out.answer, example)
        score = task.agreement(parsed.value, example) if parsed.ok else 0.0
        if score < fcfg.min_relevance:
            found["agreement"] = f"answer {out.answer[:60]!r} agrees {score:.2f} < {fcfg.min_relevance} with the gold"
    else:
        found["agreement"] = "no answer"
    fut = from_future(block_text, example, later) if block_text else []
    if fut:
        found["future"] = "; ".join(fut)[:200]
    bad = ungrounded(block_text, example, task, fcfg.min_overlap, fcfg.min_question_overlap) if block_text else []
    if bad:
        found["grounding"] = "; ".join(bad)[:200]
    if not script_ok(block_text + " " + out.answer, fcfg.language):
        found["language"] = f"not written in the expected script ({fcfg.language})"
    reasons = [c for c in CHECKS if c in found and c not in fcfg.skip]
    return Verdict(reasons, {k: v for k, v in found.items() if k in reasons})


def mark_duplicates(outputs: list[tuple[str, Output, Verdict]], fcfg: FilterConfig) -> None:
    """Reject an accepted output identical (block and answer, normalized) to an earlier accepted one for another
    input (the first keeps it). `outputs` holds (request key, output, verdict) in input order."""
    if "duplicate" in fcfg.skip:
        return
    first: dict[tuple[str, str], str] = {}
    for key, out, verdict in outputs:
        if verdict.reasons:
            continue
        sig = (" ".join(words(out.block or "")), " ".join(words(out.answer)))
        if sig in first and first[sig] != key:
            verdict.reasons.append("duplicate")
            verdict.details["duplicate"] = f"same output as request {first[sig][:12]}"
        else:
            first.setdefault(sig, key)
