"""Shapes-world generator for the 'dialog' task: VisDial-style dialogues about one scene.

    vlmtune data synth --task dialog --n 2000 --out data/dialog

A dialogue is a short caption that gives partial information ("a picture with five shapes.") and
10 rounds of question/answer, each answer derived from the scene's ground truth:

    how many red shapes are there?          -> two
    is there a blue square?                  -> no
    are there any triangles?                 -> yes, two of them
    what colour is the big circle?           -> red
    what colours are the squares?            -> red and blue
    ...

Answers are lower-case and unpunctuated, as in VisDial v1.0.

One Example per (dialogue, round r). The model answers round r given the caption and the GOLD
history of rounds 1..r-1 as alternating user/assistant messages; round r's gold answer is only the
final assistant message (the training target, which `Example.prompt_messages()` drops at eval):

    user:      <image>\\n{instruction}\\nCaption: {caption}\\n{question 1}
    assistant: {answer 1}
    ...
    user:      {question r}
    assistant: {answer r}            <- target, never shown to the model

Round sampling: a generator returns one Item per call, so each call builds one whole dialogue (all 10
rounds, with their own options) and emits ONE round r drawn uniformly from 1..10. Every round position
is therefore equally represented, and one dialogue contributes one example, so a dataset of n examples
holds n different scenes. `dialog_items(dialogue)` gives all rounds of a dialogue (for callers that
want every round). The group is the scene (`dialog-scene-<hash of the scene's shapes>`), so every
round of a dialogue -- and every dialogue about an identical scene -- lands in the same split.

Options (VisDial's 100 candidates), per round: the gold answer, every other phrasing that is also a
correct answer to this round's question ("2", "there are two" for "two"), and random answers to other
questions from a pool of ~125 plausible answers to every question type, shuffled; `gt_index` is
where the gold landed. Relevance (VisDial's dense annotation, here for every round): 1.0 for the
gold, 0.5 for another correct phrasing, 0.0 otherwise.

Target: {"answer": gold str, "gt_index": int, "relevance": [100 floats], "round": r (1-based)}.
Meta: scene, caption, question (round r's), round, n_rounds, dense (True), dialog_id.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from vlmtune.data.example import IMAGE_TOKEN
from vlmtune.data.synth import Item, generator
from vlmtune.data.synth.shapes import COLORS, KINDS, MAX_SHAPES, Scene, make_scene, number_word

N_ROUNDS = 10
N_OPTIONS = 100
MIN_SHAPES = 2  # one shape leaves too few distinct questions for 10 rounds
DIALOG_INSTRUCTION = "Answer each question about the image in a few words."
REL_GOLD, REL_EQUIVALENT, REL_OTHER = 1.0, 0.5, 0.0

Meaning = tuple  # ("num", 2), ("yes",), ("color", "red"), ("colors", ("blue", "red")), ...


# ----------------------------------------------------------------------------- answers and their meanings
def _num_forms(n: int) -> list[str]:
    if n == 0:
        return ["none", "zero", "0", "there are none"]
    if n == 1:
        return ["one", "1", "there is one", "just one"]
    w = number_word(n)
    return [w, str(n), f"there are {w}", f"{w} of them"]


def _yes_num_forms(n: int) -> list[str]:
    if n == 1:
        return ["yes, just one", "yes, one of them", "yes, 1 of them"]
    w = number_word(n)
    return [f"yes, {w} of them", f"yes, {n} of them", f"yes, there are {w}"]


def _color_pair(a: str, b: str) -> tuple[str, str]:
    order = list(COLORS)
    first, second = sorted((a, b), key=order.index)
    return first, second


def _all_forms() -> dict[Meaning, list[str]]:
    """Every answer meaning -> its phrasings; the first phrasing is the canonical (gold) one."""
    forms: dict[Meaning, list[str]] = {}
    for n in range(MAX_SHAPES + 1):
        forms[("num", n)] = _num_forms(n)
    forms[("yes",)] = ["yes", "yeah", "yes, there is"]
    forms[("no",)] = ["no", "nope", "no, there isn't"]
    for n in range(1, MAX_SHAPES + 1):
        forms[("yes_num", n)] = _yes_num_forms(n)
    for c in COLORS:
        forms[("color", c)] = [c, f"it is {c}", f"it's {c}"]
    for k in KINDS:
        forms[("shape", k)] = [f"a {k}", k, f"it is a {k}"]
    forms[("size", "big")] = ["big", "it is big", "large"]
    forms[("size", "small")] = ["small", "it is small", "little"]
    cols = list(COLORS)
    for i, a in enumerate(cols):
        forms[("colors", (a,))] = [f"all {a}", f"they are all {a}"]
        for b in cols[i + 1 :]:
            forms[("colors", (a, b))] = [f"{a} and {b}", f"{b} and {a}", f"they are {a} and {b}"]
    forms[("unsure",)] = ["i can't tell", "not sure", "hard to say", "i don't know", "maybe", "i think so"]
    return forms


FORMS: dict[Meaning, list[str]] = _all_forms()
MEANING_OF: dict[str, Meaning] = {s: m for m, ss in FORMS.items() for s in ss}
POOL: tuple[str, ...] = tuple(MEANING_OF)  # every plausible answer, in a fixed order
assert len(MEANING_OF) == sum(map(len, FORMS.values())), "an answer phrasing belongs to two meanings"
assert len(POOL) >= N_OPTIONS, (len(POOL), N_OPTIONS)


# ----------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Question:
    text: str
    gold: Meaning  # its canonical phrasing is the gold answer
    accepted: frozenset  # meanings that are correct answers (gold included)


def _q(text: str, gold: Meaning, *also: Meaning) -> Question:
    return Question(text, gold, frozenset((gold, *also)))


def _pick(rng: random.Random, present: list[str], universe: list[str] | tuple[str, ...]) -> str:
    """A value that occurs in the scene half of the time (when any does), so yes and no both occur."""
    return rng.choice(present) if present and rng.random() < 0.5 else rng.choice(list(universe))


def _count_q(n: int, text: str) -> Question:
    return _q(text, ("num", n))


def _exists_q(n: int, text: str, gold_yes: Meaning) -> Question:
    if n > 0:
        return _q(text, gold_yes, ("yes",), ("yes_num", n))
    return _q(text, ("no",), ("num", 0))


def _t_count_color(rng: random.Random, s: Scene) -> Question:
    c = _pick(rng, [x.color for x in s.shapes], list(COLORS))
    return _count_q(s.count(color=c), f"how many {c} shapes are there?")


def _t_count_kind(rng: random.Random, s: Scene) -> Question:
    k = _pick(rng, [x.kind for x in s.shapes], KINDS)
    return _count_q(s.count(kind=k), f"how many {k}s are there?")


def _t_count_color_kind(rng: random.Random, s: Scene) -> Question:
    c, k = (
        rng.choice([(x.color, x.kind) for x in s.shapes])
        if rng.random() < 0.5
        else (rng.choice(list(COLORS)), rng.choice(KINDS))
    )
    return _count_q(s.count(c, k), f"how many {c} {k}s are there?")


def _t_count_total(rng: random.Random, s: Scene) -> Question:
    return _count_q(len(s.shapes), "how many shapes are there in total?")


def _t_exists(rng: random.Random, s: Scene) -> Question:
    c, k = (
        rng.choice([(x.color, x.kind) for x in s.shapes])
        if rng.random() < 0.5
        else (rng.choice(list(COLORS)), rng.choice(KINDS))
    )
    return _exists_q(s.count(c, k), f"is there a {c} {k}?", ("yes",))


def _t_any_kind(rng: random.Random, s: Scene) -> Question:
    k = _pick(rng, [x.kind for x in s.shapes], KINDS)
    n = s.count(kind=k)
    return _exists_q(n, f"are there any {k}s?", ("yes_num", n))


def _t_colour_of(rng: random.Random, s: Scene) -> Question | None:
    """The colour of a shape named unambiguously by its kind, or by its size and kind."""
    x = rng.choice(s.shapes)
    if s.count(kind=x.kind) == 1:
        return _q(f"what colour is the {x.kind}?", ("color", x.color))
    if sum(1 for y in s.shapes if y.kind == x.kind and y.size == x.size) == 1:
        return _q(f"what colour is the {x.size} {x.kind}?", ("color", x.color))
    return None


def _t_shape_of(rng: random.Random, s: Scene) -> Question | None:
    x = rng.choice(s.shapes)
    if s.count(color=x.color) != 1:
        return None
    return _q(f"what shape is the {x.color} one?", ("shape", x.kind))


def _t_size_of(rng: random.Random, s: Scene) -> Question | None:
    x = rng.choice(s.shapes)
    if s.count(x.color, x.kind) != 1:
        return None
    return _q(f"is the {x.color} {x.kind} big or small?", ("size", x.size))


def _t_colours_of_kind(rng: random.Random, s: Scene) -> Question | None:
    k = rng.choice(KINDS)
    cols = sorted({x.color for x in s.shapes if x.kind == k}, key=list(COLORS).index)
    if s.count(kind=k) < 2 or len(cols) > 2:
        return None
    text = f"what colours are the {k}s?"
    if len(cols) == 1:
        return _q(text, ("colors", (cols[0],)), ("color", cols[0]))
    return _q(text, ("colors", _color_pair(*cols)))


def _t_same_colour(rng: random.Random, s: Scene) -> Question:
    same = len({x.color for x in s.shapes}) == 1
    return _q("are all the shapes the same colour?", ("yes",) if same else ("no",))


def _t_more_than(rng: random.Random, s: Scene) -> Question:
    a, b = rng.sample(list(COLORS), 2)
    more = s.count(color=a) > s.count(color=b)
    return _q(f"are there more {a} shapes than {b} shapes?", ("yes",) if more else ("no",))


TEMPLATES: tuple[Callable[[random.Random, Scene], Question | None], ...] = (
    _t_count_color,
    _t_count_kind,
    _t_count_color_kind,
    _t_count_total,
    _t_exists,
    _t_any_kind,
    _t_colour_of,
    _t_shape_of,
    _t_size_of,
    _t_colours_of_kind,
    _t_same_colour,
    _t_more_than,
)


# ----------------------------------------------------------------------------- captions
def _caption(rng: random.Random, s: Scene) -> str:
    """A short caption with partial information, as VisDial's captions give a little of the picture."""
    choices = [
        "a picture with some shapes.",
        f"a picture with {number_word(len(s.shapes))} shapes.",
        "some coloured shapes on a grey background.",
    ]
    x = rng.choice(s.shapes)
    choices.append(f"a {x.color} {x.kind} and some other shapes.")
    return rng.choice(choices)


# ----------------------------------------------------------------------------- dialogues
@dataclass(frozen=True)
class Round:
    question: str
    answer: str  # gold, canonical phrasing
    options: list[str]  # N_OPTIONS distinct candidates
    gt_index: int  # options[gt_index] == answer
    relevance: list[float]  # per option: REL_GOLD / REL_EQUIVALENT / REL_OTHER


@dataclass(frozen=True)
class Dialogue:
    scene: Scene
    caption: str
    rounds: list[Round]

    @property
    def group(self) -> str:
        """Split group: the scene, so all rounds of this dialogue (and any same-scene dialogue) stay together."""
        return "dialog-scene-" + _hash(self.scene.to_dict())

    @property
    def dialog_id(self) -> str:
        return "dialog-" + _hash([self.scene.to_dict(), self.caption, [r.question for r in self.rounds]])


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _options(rng: random.Random, q: Question) -> Round:
    """100 candidates for one question: gold, its correct alternatives, random others; shuffled."""
    gold = FORMS[q.gold][0]
    equivalents = [a for a in POOL if a != gold and MEANING_OF[a] in q.accepted]
    others = [a for a in POOL if MEANING_OF[a] not in q.accepted]
    opts = [gold, *equivalents, *rng.sample(others, N_OPTIONS - 1 - len(equivalents))]
    rng.shuffle(opts)
    rel = [REL_GOLD if a == gold else REL_EQUIVALENT if MEANING_OF[a] in q.accepted else REL_OTHER for a in opts]
    return Round(q.text, gold, opts, opts.index(gold), rel)


def make_dialogue(rng: random.Random, n_rounds: int = N_ROUNDS) -> Dialogue:
    """A scene, a caption and up to `n_rounds` rounds with distinct questions and per-round options."""
    n = rng.randint(MIN_SHAPES, MAX_SHAPES)
    scene = make_scene(rng, [(None, None)] * n)
    cap = _caption(rng, scene)
    questions: list[Question] = []
    seen: set[str] = set()
    for _ in range(50 * n_rounds):  # rejection sampling; 10 distinct questions come within a few dozen tries
        if len(questions) == n_rounds:
            break
        q = rng.choice(TEMPLATES)(rng, scene)
        if q is None or q.text in seen:
            continue
        seen.add(q.text)
        questions.append(q)
    return Dialogue(scene, cap, [_options(rng, q) for q in questions])


def round_messages(d: Dialogue, r: int) -> list[dict[str, str]]:
    """Messages for round r (1-based): caption, gold history of rounds 1..r-1, question r, answer r last."""
    if not 1 <= r <= len(d.rounds):
        raise ValueError(f"round must be in 1..{len(d.rounds)}, got {r}")
    msgs = []
    for i, rd in enumerate(d.rounds[:r]):
        text = f"{IMAGE_TOKEN}\n{DIALOG_INSTRUCTION}\nCaption: {d.caption}\n{rd.question}" if i == 0 else rd.question
        msgs += [{"role": "user", "content": text}, {"role": "assistant", "content": rd.answer}]
    return msgs


def round_item(d: Dialogue, r: int) -> Item:
    """The Item for round r of dialogue d (group = the scene)."""
    rd = d.rounds[r - 1]
    return Item(
        scenes=[d.scene],
        messages=round_messages(d, r),
        target={"answer": rd.answer, "gt_index": rd.gt_index, "relevance": list(rd.relevance), "round": r},
        options=list(rd.options),
        meta={
            "scene": d.scene.to_dict(),
            "group": d.group,
            "dialog_id": d.dialog_id,
            "caption": d.caption,
            "question": rd.question,
            "round": r,
            "n_rounds": len(d.rounds),
            "dense": True,
        },
    )


def dialog_items(d: Dialogue) -> list[Item]:
    """One Item per round of the dialogue, rounds 1..len(d.rounds)."""
    return [round_item(d, r) for r in range(1, len(d.rounds) + 1)]


@generator("dialog")
def _dialog_item(rng: random.Random) -> Item:
    """One dialogue per call; one round of it, drawn uniformly (see the module docstring)."""
    d = make_dialogue(rng)
    return round_item(d, rng.randint(1, len(d.rounds)))
