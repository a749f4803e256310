"""Shapes-memory: seeded, procedural long-horizon episodes in the shapes world, with probes of seven kinds.

    path = synthesize("memory", 840, "data/shapes-memory", seed=0)   # 840 probes, in 60 episodes

An episode is a sequence of user turns (the history a memory writes) and, between them, probes (questions
asked at a turn, about what came before; they are not part of the history):
- show an image with a tag: "Here is photo #417, Mina's drawing." + the image;
- show it again ("Here is photo #417 again.": the same bytes), or replace it with a new version;
- tell a fact ("Leo's favourite colour is green.") or update one ("Update: ... is now blue.");
- filler: chit-chat, other photos and facts, and hard-negative photos that differ from a target by one
  attribute (colour or kind).

Probe kinds (answers come from a closed vocabulary and are scored exactly):
- image_recall:  "What colour was the triangle in photo #417?" (only the pixels hold the answer);
- text_to_image: "Which photo had a yellow triangle?" -> "417" (two hard negatives are shown too);
- text_recall:   "What is Leo's favourite colour?" (a fact never updated);
- update:        the same questions about a fact or photo that was changed: the newest version wins;
- frequency:     "How many times did I show you photo #417?" -> "3";
- temporal:      "Which did I show you first, photo #417 or photo #82?" -> "417";
- abstention:    a question about a fact never told or a photo never shown -> "unknown".

Episode lengths cycle through 50, 100, 200 and 500 turns (20 and 40 when n is below 56 probes: a smoke-sized
world); there are at least 8 episodes, so a grouped train/val/test split can be drawn; each probe's distance from its evidence (the
earliest evidence turn, for frequency and temporal probes) is drawn from the buckets 1-5, 6-20, 21-50,
51-100, 101-200 and 201-500 that fit the episode, in turn. Everything comes from `random.Random` seeded by
(seed, episode index), so the same seed gives the same episodes, pixels included.

Files: OUT/episodes.jsonl (one episode per line: {"id", "length", "turns": [{"turn", "kind", "text",
"image" (relative to the file, or null), "slot", "meta"}]}), OUT/images/*.png, and OUT/data.jsonl: one
Example per probe (task "memory"; group = the episode; meta: episode, turn (the probe is asked after
turns 0..turn-1), evidence (turn indices), kind, distance, bucket, length). A slot names what a turn sets
("Leo's favourite colour", "photo #417"): a later turn with the same slot supersedes it.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.data.example import Example, atomic_write_bytes, atomic_write_text, write_jsonl
from vlmtune.data.synth.shapes import COLORS, KINDS, Scene, make_scene, render
from vlmtune.errors import ConfigError
from vlmtune.logs import progress_bar

LENGTHS = (50, 100, 200, 500)
SMALL_LENGTHS = (20, 40)
MIN_EPISODES = 8  # enough groups for a grouped train/val/test split
BUCKETS = ((1, 5), (6, 20), (21, 50), (51, 100), (101, 200), (201, 500))
PROBE_KINDS = ("image_recall", "text_to_image", "text_recall", "update", "frequency", "temporal", "abstention")
UNKNOWN = "unknown"
NAMES = ("Mina", "Tom", "Ana", "Leo", "Kai", "Eva", "Sam", "Ivy", "Max", "Zoe", "Ben", "Lia")
ATTRS = {"colour": tuple(COLORS), "shape": KINDS, "number": tuple(str(i) for i in range(10))}
CHAT = (
    "I had tea this afternoon.",
    "It rained all morning.",
    "The bus was late again.",
    "I am reading a long book.",
    "We cooked pasta tonight.",
    "My phone battery died.",
    "The park was busy today.",
    "I cleaned the kitchen.",
    "Work was quiet this week.",
    "I watched a film last night.",
    "The coffee here is good.",
    "I forgot my umbrella.",
)
PROBES_PER_KIND = 2


def bucket_of(distance: int | None) -> str:
    """The distance bucket's label ("21-50"); "none" for probes without evidence (abstention)."""
    if distance is None:
        return "none"
    for lo, hi in BUCKETS:
        if lo <= distance <= hi:
            return f"{lo}-{hi}"
    return f">{BUCKETS[-1][1]}"


@dataclass
class Turn:
    kind: str  # show | again | image_update | fact | update | chat
    text: str
    scene: Scene | None = None
    slot: str | None = None
    image_of: int | None = None  # "again": the turn whose image (same bytes) is shown again
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Probe:
    kind: str
    turn: int  # asked after history turns 0..turn-1
    question: str
    answer: str
    evidence: list[int]
    options: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


class _Episode:
    """Builds one episode: probes first (they reserve their evidence turns), then filler around them."""

    def __init__(self, rng: random.Random, length: int, per_kind: int):
        self.rng, self.length, self.per_kind = rng, length, per_kind
        self.turns: list[Turn | None] = [None] * length
        self.probes: list[Probe] = []
        self.tags = iter(rng.sample(range(1, 1000), 999))
        slots = [(n, a) for n in NAMES for a in ATTRS]
        rng.shuffle(slots)
        self.free_slots = slots
        combos = [(c, k) for c in COLORS for k in KINDS]
        rng.shuffle(combos)
        # Targets of text->image probes: no other image of the episode shows these colour+kind pairs.
        self.reserved = set(combos[:per_kind])
        self.target_combos = combos[:per_kind]
        self.bucket_i = rng.randrange(len(BUCKETS))

    # --- helpers ------------------------------------------------------------------------------------------
    def free(self, lo: int, hi: int) -> list[int]:
        return [i for i in range(max(lo, 0), min(hi, self.length)) if self.turns[i] is None]

    def scene(
        self,
        must: tuple[str, str] | None = None,
        one_kind: str | None = None,
        avoid: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> Scene:
        """A scene holding `must` (colour, kind), and when `one_kind` exactly one shape of that kind; no pair
        in `avoid` or in the reserved text->image targets (other than `must`)."""
        forbidden = (self.reserved | set(avoid)) - ({must} if must else set())
        rng = self.rng
        for _ in range(200):
            n = rng.randint(2, 5)
            specs: list[tuple[str | None, str | None]] = [must] if must else []
            while len(specs) < n:
                c, k = rng.choice(list(COLORS)), rng.choice(KINDS)
                if (c, k) in forbidden or (one_kind and k == one_kind and any(s[1] == one_kind for s in specs)):
                    continue
                specs.append((c, k))
            if one_kind and not any(k == one_kind for _, k in specs):
                specs[-1] = (rng.choice([c for c in COLORS if (c, one_kind) not in forbidden]), one_kind)
            scene = make_scene(rng, specs)
            pairs = [(s.color, s.kind) for s in scene.shapes]
            if not any(p in forbidden for p in pairs) and (not one_kind or sum(k == one_kind for _, k in pairs) == 1):
                return scene
        raise RuntimeError("could not draw a scene under the constraints")  # not reached with these sizes

    def distance(self, min_d: int = 1) -> tuple[int, int]:
        """(probe turn, distance) from the next distance bucket that fits the episode (each bucket in turn)."""
        fits = [(lo, hi) for lo, hi in BUCKETS if lo <= self.length - 1 and max(lo, min_d) <= min(hi, self.length - 1)]
        lo, hi = fits[self.bucket_i % len(fits)]
        self.bucket_i += 1
        d = self.rng.randint(max(lo, min_d), min(hi, self.length - 1))
        return self.rng.randint(d, self.length), d

    def free_spot(self) -> tuple[int, int] | None:
        """(probe turn, distance) whose evidence turn is still free (20 tries), or None."""
        for _ in range(20):
            t, d = self.distance()
            if self.turns[t - d] is None:
                return t, d
        return None

    def place(self, lo: int, hi: int, turn: Turn) -> int | None:
        spots = self.free(lo, hi)
        if not spots:
            return None
        i = self.rng.choice(spots)
        self.turns[i] = turn
        return i

    def show(self, scene: Scene, tag: int) -> Turn:
        return Turn(
            "show",
            f"Here is photo #{tag}, {self.rng.choice(NAMES)}'s drawing.",
            scene,
            f"photo #{tag}",
            meta={"tag": tag},
        )

    def add_probe(
        self, kind: str, t: int, question: str, answer: str, evidence: list[int], options: list[str], **meta: Any
    ) -> None:
        self.probes.append(Probe(kind, t, question, answer, sorted(evidence), options, meta))

    # --- probes ---------------------------------------------------------------------------------------------
    def image_recall(self) -> None:
        spot = self.free_spot()
        if spot is None:
            return
        t, d = spot
        kind, tag = self.rng.choice(KINDS), next(self.tags)
        scene = self.scene(one_kind=kind)
        self.turns[t - d] = self.show(scene, tag)
        colour = next(s.color for s in scene.shapes if s.kind == kind)
        self.add_probe(
            "image_recall", t, f"What colour was the {kind} in photo #{tag}?", colour, [t - d], [*COLORS, UNKNOWN]
        )

    def text_to_image(self, combo: tuple[str, str]) -> None:
        spot = self.free_spot()
        if spot is None:
            return
        t, d = spot
        tag = next(self.tags)
        self.turns[t - d] = self.show(self.scene(must=combo), tag)
        colour, kind = combo
        # Hard negatives: one attribute differs; placed between the evidence and the probe when there is room.
        negatives = [
            (self.rng.choice([c for c in COLORS if c != colour]), kind),
            (colour, self.rng.choice([k for k in KINDS if k != kind])),
        ]
        for neg in negatives:
            if neg in self.reserved:
                continue
            nt = next(self.tags)
            turn = self.show(self.scene(must=neg, avoid={combo}), nt)
            turn.meta["hard_negative_of"] = f"{colour} {kind}"
            if self.place(t - d + 1, t, turn) is None:
                self.place(0, t, turn)
        self.add_probe("text_to_image", t, f"Which photo had a {colour} {kind}?", str(tag), [t - d], [UNKNOWN], tag=tag)

    def fact_turn(self, slot: tuple[str, str], value: str, update: bool) -> Turn:
        name, attr = slot
        text = (
            f"Update: {name}'s favourite {attr} is now {value}." if update else f"{name}'s favourite {attr} is {value}."
        )
        return Turn("update" if update else "fact", text, slot=f"{name}'s favourite {attr}", meta={"value": value})

    def text_recall(self) -> None:
        spot = self.free_spot()
        if spot is None:
            return
        t, d = spot
        slot = self.free_slots.pop()
        value = self.rng.choice(ATTRS[slot[1]])
        self.turns[t - d] = self.fact_turn(slot, value, update=False)
        self.add_probe(
            "text_recall", t, f"What is {slot[0]}'s favourite {slot[1]}?", value, [t - d], [*ATTRS[slot[1]], UNKNOWN]
        )

    def update(self, image: bool) -> None:
        for _ in range(20):
            t, d = self.distance(min_d=1)
            e = t - d
            earlier = self.free(0, e)
            if self.turns[e] is None and earlier:
                break
        else:
            return
        n_old = min(len(earlier), self.rng.randint(1, 2))
        if image:
            tag, kind = next(self.tags), self.rng.choice(KINDS)
            allowed = [c for c in COLORS if (c, kind) not in self.reserved]
            versions = sorted(self.rng.sample(earlier, min(n_old, len(allowed) - 1))) + [e]
            colours = self.rng.sample(allowed, len(versions))
            for j, (pos, colour) in enumerate(zip(versions, colours)):
                scene = self.scene(must=(colour, kind), one_kind=kind)
                self.turns[pos] = (
                    self.show(scene, tag)
                    if j == 0
                    else Turn(
                        "image_update",
                        f"I redrew photo #{tag}; here is the new version.",
                        scene,
                        f"photo #{tag}",
                        meta={"tag": tag},
                    )
                )
            self.add_probe(
                "update",
                t,
                f"What colour was the {kind} in photo #{tag}?",
                colours[-1],
                [e],
                [*COLORS, UNKNOWN],
                versions=versions,
                of="image",
            )
            return
        versions = sorted(self.rng.sample(earlier, n_old)) + [e]
        slot = self.free_slots.pop()
        values = self.rng.sample(list(ATTRS[slot[1]]), len(versions))
        for j, (pos, value) in enumerate(zip(versions, values)):
            self.turns[pos] = self.fact_turn(slot, value, update=j > 0)
        self.add_probe(
            "update",
            t,
            f"What is {slot[0]}'s favourite {slot[1]}?",
            values[-1],
            [e],
            [*ATTRS[slot[1]], UNKNOWN],
            versions=versions,
            of="fact",
        )

    def frequency(self) -> None:
        for _ in range(20):
            t, d = self.distance(min_d=1)
            e = t - d
            count = self.rng.randint(1, min(4, d))
            later = self.free(e + 1, t)
            if self.turns[e] is None and len(later) >= count - 1:
                break
        else:
            return
        tag = next(self.tags)
        first = self.turns[e] = self.show(self.scene(), tag)
        shown = [e] + self.rng.sample(later, count - 1)
        for pos in shown[1:]:
            self.turns[pos] = Turn(
                "again", f"Here is photo #{tag} again.", first.scene, f"photo #{tag}", image_of=e, meta={"tag": tag}
            )
        self.add_probe(
            "frequency",
            t,
            f"How many times did I show you photo #{tag}?",
            str(count),
            shown,
            ["1", "2", "3", "4", "5", UNKNOWN],
            tag=tag,
        )

    def temporal(self) -> None:
        for _ in range(20):
            t, d = self.distance(min_d=2)
            e1 = t - d
            later = self.free(e1 + 1, t)
            if self.turns[e1] is None and later:
                break
        else:
            return
        e2 = self.rng.choice(later)
        first, second = next(self.tags), next(self.tags)
        self.turns[e1] = self.show(self.scene(), first)
        self.turns[e2] = self.show(self.scene(), second)
        a, b = (first, second) if self.rng.random() < 0.5 else (second, first)
        self.add_probe(
            "temporal",
            t,
            f"Which did I show you first, photo #{a} or photo #{b}?",
            str(first),
            [e1, e2],
            [str(a), str(b), UNKNOWN],
        )

    def abstention(self) -> None:
        t = self.rng.randint(1, self.length)
        if self.rng.random() < 0.5:
            name, attr = self.free_slots.pop()  # never told in this episode (filler facts skip it too)
            self.add_probe(
                "abstention", t, f"What is {name}'s favourite {attr}?", UNKNOWN, [], [*ATTRS[attr], UNKNOWN], of="fact"
            )
        else:
            kind = self.rng.choice(KINDS)
            self.add_probe(
                "abstention",
                t,
                f"What colour was the {kind} in photo #{next(self.tags)}?",
                UNKNOWN,
                [],
                [*COLORS, UNKNOWN],
                of="image",
            )

    # --- the whole episode -----------------------------------------------------------------------------------
    def build(self) -> tuple[list[Turn], list[Probe]]:
        rng = self.rng
        for j in range(self.per_kind):
            self.image_recall()
            self.text_to_image(self.target_combos[j])
            self.text_recall()
            self.update(image=j % 2 == 1)
            self.frequency()
            self.temporal()
            self.abstention()
        filler_slots = self.free_slots[: max(3, len(self.free_slots) // 2)]
        told: dict[tuple[str, str], int] = {}
        for i in range(self.length):
            if self.turns[i] is not None:
                continue
            r = rng.random()
            if r < 0.5:
                self.turns[i] = Turn("chat", rng.choice(CHAT))
            elif r < 0.75:
                self.turns[i] = self.show(self.scene(), next(self.tags))
            else:
                slot = rng.choice(filler_slots)
                told[slot] = told.get(slot, 0) + 1
                self.turns[i] = self.fact_turn(slot, rng.choice(ATTRS[slot[1]]), update=told[slot] > 1)
        turns = [t for t in self.turns if t is not None]
        # text->image answers must be unique among the photos shown before the probe (checked, not assumed)
        for p in self.probes:
            if p.kind == "text_to_image":
                colour, kind = p.question[len("Which photo had a ") : -1].split(" ")
                holders = {
                    tt.meta.get("tag")
                    for tt in turns[: p.turn]
                    if tt.scene is not None and any(s.color == colour and s.kind == kind for s in tt.scene.shapes)
                }
                assert holders == {int(p.answer)}, (p.question, holders)
                p.options = sorted({str(tt.meta["tag"]) for tt in turns[: p.turn] if "tag" in tt.meta}, key=int) + [
                    UNKNOWN
                ]
        return turns, sorted(self.probes, key=lambda p: (p.turn, PROBE_KINDS.index(p.kind)))


def build_episode(
    seed: int, index: int, length: int, per_kind: int = PROBES_PER_KIND
) -> tuple[list[Turn], list[Probe]]:
    """One episode's history turns and probes; depends only on (seed, index, length, per_kind)."""
    return _Episode(random.Random(f"shapes-memory-{seed}-{index}"), length, per_kind).build()


def synthesize_memory(
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    per_kind: int = PROBES_PER_KIND,
    lengths: tuple[int, ...] = LENGTHS,
) -> Path:
    """Write about `n` probes (whole episodes of 7 x per_kind probes, at least 8 episodes;
    lengths cycle through `lengths`) to OUT/data.jsonl, with OUT/episodes.jsonl and OUT/images/. Returns the
    data.jsonl path."""
    if n < 1:
        raise ConfigError(f"the memory generator needs n >= 1 probes, got {n}")
    if any(L < 10 for L in lengths):
        raise ConfigError(f"shapes-memory episodes need at least 10 turns, got lengths {lengths}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    # At least two episodes of each length (so a grouped train/val/test split can be drawn): a small n gets one
    # probe of each kind per episode instead of per_kind.
    if n < len(PROBE_KINDS) * 2 * len(lengths):
        lengths = SMALL_LENGTHS  # a handful of probes (run --smoke, tests): short episodes, same kinds of turns
    per_kind = max(1, min(per_kind, n // (len(PROBE_KINDS) * 2 * len(lengths))))
    n_episodes = max(MIN_EPISODES, math.ceil(n / (len(PROBE_KINDS) * per_kind)))
    lines, examples = [], []
    for index in progress_bar(range(n_episodes), desc="synth memory episodes"):
        length = lengths[index % len(lengths)]
        ep = f"mem-{index:04d}"
        turns, probes = build_episode(seed, index, length, per_kind)
        rows = []
        for i, turn in enumerate(turns):
            image = None
            if turn.scene is not None:
                src = turn.image_of if turn.image_of is not None else i
                image = f"images/{ep}-t{src:03d}.png"
                if src == i:
                    buf = io.BytesIO()
                    render(turn.scene, image_size).save(buf, format="PNG")
                    atomic_write_bytes(out / image, buf.getvalue())
            meta = dict(turn.meta)
            if turn.scene is not None:
                meta["scene"] = turn.scene.to_dict()
            rows.append(
                {"turn": i, "kind": turn.kind, "text": turn.text, "image": image, "slot": turn.slot, "meta": meta}
            )
        lines.append(json.dumps({"id": ep, "length": length, "turns": rows}, ensure_ascii=False))
        for j, p in enumerate(probes):
            distance = p.turn - p.evidence[0] if p.evidence else None
            examples.append(
                Example(
                    id=f"{ep}-p{j:02d}",
                    task="memory",
                    group=ep,
                    target=p.answer,
                    options=p.options,
                    messages=[{"role": "user", "content": p.question}, {"role": "assistant", "content": p.answer}],
                    meta={
                        "source": "shapes-memory",
                        "seed": seed,
                        "episode": ep,
                        "turn": p.turn,
                        "evidence": p.evidence,
                        "kind": p.kind,
                        "distance": distance,
                        "bucket": bucket_of(distance),
                        "length": length,
                        **p.meta,
                    },
                )
            )
    atomic_write_text(out / "episodes.jsonl", "\n".join(lines) + "\n")
    return write_jsonl(out / "data.jsonl", examples)
