"""Shapes-world generator for the 'mcq' task: which object does "that one" / "저거" refer to?

Two speakers each post a photo (a shapes-world scene): A posts photo 0, B posts photo 1. Each photo is
shown as an image (`<image>`), as a caption (an object list with sizes), or both (meta["modality"]).
They chat about objects in the photos by colour and kind ("your red circle", "내가 올린 사진 속 파란
삼각형"), and the final line says "that one" / "저거". The referent is fixed by the dialogue, never
random: it is the object of the last line that points at an object, which either names it with a
possessive ("your red circle": strategy "mention") or picks it out by a property unique in one photo
("the only yellow shape in my photo": strategy "property", a colour, kind or size). A filler line
without any object may come between that line and the final one.

The question has 4 options, each an object in one photo ("the red circle in A's photo" / "A가 올린
사진 속 빨간 원"), exactly one right. Distractors: another object in the gold photo (right photo, wrong
object) and an object of the referent's kind in the other photo (wrong photo, same kind), so
object-level and photo-level accuracy differ; the fourth is any other object. Within a photo every
(colour, kind) is unique, so every option names exactly one object.

meta: option_photo (photo of each option: 0 = A's, 1 = B's), option_object (index of each option's
shape in its scene's "shapes"), referent {photo, index, color, kind, size, strategy, property, line},
turns (the spoken lines [speaker, text], photos left out), lang ("en" | "ko"), modality
("image" | "caption" | "both"), scenes (both scene dicts, whatever the modality).
"""

from __future__ import annotations

import random
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN
from vlmtune.data.synth import Item, generator
from vlmtune.data.synth.shapes import COLORS, KINDS, Scene, make_scene
from vlmtune.errors import ConfigError

SPEAKERS = ("A", "B")  # speaker i posts photo i
LETTERS = "ABCD"
MODALITIES = ("image", "caption", "both")

LANGS = ("en", "ko")
KO_COLOR = {"red": "빨간", "green": "초록", "blue": "파란", "yellow": "노란"}
KO_KIND = {"circle": "원", "square": "사각형", "triangle": "삼각형"}  # all end in a final consonant: 이/을/은
KO_SIZE = {"big": "큰", "small": "작은"}

# --- English templates ------------------------------------------------------------------------------
EN_OPEN = ("Here's a photo I took today.", "Let me share a picture from my desk.", "Look what I drew this morning.")
EN_REPLY = ("Nice! I'll post one too.", "Oh cool, here's mine.", "Love it. Here is my photo.")
# {pos}: "my" / "your"; {obj}: "red circle"
EN_MENTION = (
    "I really like {pos} {obj}.",
    "{Pos} {obj} stands out the most.",
    "The colour of {pos} {obj} is so vivid.",
    "Look at {pos} {obj}, it came out nicely.",
)
EN_PROPERTY = {
    "color": (
        "In {whose} photo, the only {value} shape looks great.",
        "The one {value} shape in {whose} photo catches my eye.",
    ),
    "kind": (
        "The only {value} in {whose} photo is my favourite.",
        "There is just one {value} in {whose} photo and it looks great.",
    ),
    "size": (
        "The only {value} shape in {whose} photo really stands out.",
        "In {whose} photo, the single {value} shape is the nicest.",
    ),
}
EN_FILLER = ("Haha, true.", "Totally agree!", "Right?", "Thanks!")
EN_FINAL = (
    "Yes, I keep looking at that one.",
    "Oh, that one? I like it too.",
    "Honestly, that one is the best part.",
    "Same here, that one makes the whole picture.",
)
EN_QUESTION = 'Question: in the last line, which object does "that one" refer to?'
EN_OPTIONS = "Options:"
EN_INSTRUCTION = "Answer with the letter and the option."

# --- Korean templates -------------------------------------------------------------------------------
KO_OPEN = ("오늘 찍은 사진 올릴게.", "내 책상 사진 하나 공유할게.", "아침에 그린 그림이야.")
KO_REPLY = ("오 좋다! 나도 하나 올릴게.", "멋지다, 내 사진도 봐.", "좋네. 나도 방금 찍은 사진 올릴게.")
# {pos}: "내가 올린 사진 속" / "네가 올린 사진 속"; {obj}: "빨간 원"
KO_MENTION = (
    "{pos} {obj}이 제일 마음에 들어.",
    "{pos} {obj}이 정말 눈에 띈다.",
    "{pos} {obj} 색이 참 선명하네.",
    "{pos} {obj}을 보니까 기분이 좋아져.",
)
KO_PROPERTY = {
    "color": (
        "{whose} 사진에서 하나뿐인 {value} 도형이 정말 예뻐.",
        "{whose} 사진에 {value} 도형은 하나밖에 없는데 그게 눈에 띄어.",
    ),
    "kind": ("{whose} 사진에 하나밖에 없는 {value}이 제일 좋아.", "{whose} 사진에서 {value}은 하나뿐인데 참 멋지다."),
    "size": (
        "{whose} 사진에서 하나뿐인 {value} 도형이 확 눈에 띄어.",
        "{whose} 사진 속 {value} 도형은 하나뿐인데 그게 제일 좋아.",
    ),
}
KO_FILLER = ("ㅋㅋ 맞아.", "완전 공감!", "그치?", "고마워!")
KO_FINAL = (
    "맞아, 저거 보니까 기분이 좋아져.",
    "나도 저거 마음에 들어.",
    "특히 저거 보니까 딱 그런 느낌이 들더라.",
    "솔직히 저거 때문에 사진이 살아.",
)
KO_QUESTION = "질문: 마지막 발화에서 '저거'가 가리키는 것은 무엇인가?"
KO_OPTIONS = "선택지:"
KO_INSTRUCTION = "보기의 기호와 내용으로 답하시오."


def object_name(color: str, kind: str, lang: str) -> str:
    return f"{color} {kind}" if lang == "en" else f"{KO_COLOR[color]} {KO_KIND[kind]}"


def option_text(photo: int, color: str, kind: str, lang: str) -> str:
    """'the red circle in A's photo' / 'A가 올린 사진 속 빨간 원'."""
    who = SPEAKERS[photo]
    if lang == "en":
        return f"the {object_name(color, kind, lang)} in {who}'s photo"
    return f"{who}가 올린 사진 속 {object_name(color, kind, lang)}"


def object_list(scene: Scene, lang: str) -> str:
    """The caption of a photo: every shape with its size, in reading order."""
    if lang == "en":
        items = [f"a {s.size} {s.color} {s.kind}" for s in scene.shapes]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return ", ".join(f"{KO_SIZE[s.size]} {KO_COLOR[s.color]} {KO_KIND[s.kind]}" for s in scene.shapes)


def _photo_line(photo: int, scene: Scene, modality: str, lang: str) -> str:
    label = f"Photo {photo + 1}" if lang == "en" else f"사진 {photo + 1}"
    parts = []
    if modality in ("image", "both"):
        parts.append(IMAGE_TOKEN)
    if modality in ("caption", "both"):
        parts.append(object_list(scene, lang))
    return f"({label}: {' '.join(parts)})"


def _mention(rng: random.Random, speaker: int, photo: int, color: str, kind: str, lang: str) -> str:
    obj = object_name(color, kind, lang)
    if lang == "en":
        pos = "my" if speaker == photo else "your"
        return rng.choice(EN_MENTION).format(pos=pos, Pos=pos.capitalize(), obj=obj)
    pos = "내가 올린 사진 속" if speaker == photo else "네가 올린 사진 속"
    return rng.choice(KO_MENTION).format(pos=pos, obj=obj)


def _describe(rng: random.Random, speaker: int, photo: int, prop: str, value: str, lang: str) -> str:
    if lang == "en":
        whose = "my" if speaker == photo else "your"
        return rng.choice(EN_PROPERTY[prop]).format(whose=whose, value=value)
    whose = "내" if speaker == photo else "네"
    ko_value = {"color": KO_COLOR, "kind": KO_KIND, "size": KO_SIZE}[prop][value]
    return rng.choice(KO_PROPERTY[prop]).format(whose=whose, value=ko_value)


def unique_properties(scene: Scene, index: int) -> list[str]:
    """Which of colour, kind, size single out shape `index` in its scene (no other shape shares it)."""
    me = scene.shapes[index]
    return [p for p in ("color", "kind", "size") if sum(getattr(s, p) == getattr(me, p) for s in scene.shapes) == 1]


def _scenes(rng: random.Random) -> tuple[list[Scene], int, int]:
    """Two scenes of 2-4 shapes with unique (colour, kind) per scene; the referent's kind is in both.

    Returns (scenes, referent photo, referent index in that scene's shapes).
    """
    combos = [(c, k) for c in COLORS for k in KINDS]
    specs = [rng.sample(combos, rng.randint(2, 4)) for _ in range(2)]
    photo = rng.randrange(2)
    ref = rng.choice(specs[photo])
    other = specs[1 - photo]
    if not any(k == ref[1] for _, k in other):  # a same-kind distractor must exist in the other photo
        free = [(c, ref[1]) for c in COLORS if (c, ref[1]) not in other]
        other[rng.randrange(len(other))] = rng.choice(free)
    scenes = [make_scene(rng, list(s)) for s in specs]
    index = next(i for i, s in enumerate(scenes[photo].shapes) if (s.color, s.kind) == ref)
    return scenes, photo, index


@generator("mcq")
def _mcq_item(rng: random.Random, lang: str | None = None, modality: str | None = None) -> Item:
    """One dialogue. Options (data.synth_options): lang "en" | "ko" and modality "image" | "caption" | "both"
    fix what is otherwise drawn at random (the same draws are made either way)."""
    for name, value, allowed in (("lang", lang, LANGS), ("modality", modality, MODALITIES)):
        if value is not None and value not in allowed:
            raise ConfigError(f"data.synth_options.{name}: '{value}' is not one of {', '.join(allowed)}")
    drawn_lang, drawn_modality = rng.choice(LANGS), rng.choice(MODALITIES)
    lang, modality = lang or drawn_lang, modality or drawn_modality
    scenes, photo, index = _scenes(rng)
    ref = scenes[photo].shapes[index]
    objects = [(p, i) for p in range(2) for i in range(len(scenes[p].shapes))]

    # --- options: gold, same photo, same kind in the other photo, any other --------------------------
    same_photo = [(photo, i) for i in range(len(scenes[photo].shapes)) if i != index]
    same_kind = [(1 - photo, i) for i, s in enumerate(scenes[1 - photo].shapes) if s.kind == ref.kind]
    chosen = [(photo, index), rng.choice(same_photo), rng.choice(same_kind)]
    chosen.append(rng.choice([o for o in objects if o not in chosen]))
    rng.shuffle(chosen)
    target = chosen.index((photo, index))
    options = [option_text(p, scenes[p].shapes[i].color, scenes[p].shapes[i].kind, lang) for p, i in chosen]

    # --- dialogue -------------------------------------------------------------------------------------
    en = lang == "en"
    lines: list[str] = []  # everything in the dialogue, photo lines included
    turns: list[list[str]] = []

    def say(speaker: int, text: str) -> None:
        turns.append([SPEAKERS[speaker], text])
        lines.append(f'{SPEAKERS[speaker]}: "{text}"')

    say(0, rng.choice(EN_OPEN if en else KO_OPEN))
    lines.append(_photo_line(0, scenes[0], modality, lang))
    say(1, rng.choice(EN_REPLY if en else KO_REPLY))
    lines.append(_photo_line(1, scenes[1], modality, lang))

    speaker = rng.randrange(2)
    others = [o for o in objects if o != (photo, index)]
    for _ in range(rng.randint(1, 3)):  # small talk about other objects
        p, i = rng.choice(others)
        say(speaker, _mention(rng, speaker, p, scenes[p].shapes[i].color, scenes[p].shapes[i].kind, lang))
        speaker = 1 - speaker

    props = unique_properties(scenes[photo], index)
    strategy = rng.choice(("mention", "property")) if props else "mention"
    prop = rng.choice(props) if strategy == "property" else None
    if prop is None:
        say(speaker, _mention(rng, speaker, photo, ref.color, ref.kind, lang))
    else:
        say(speaker, _describe(rng, speaker, photo, prop, getattr(ref, prop), lang))
    ref_line = len(turns) - 1
    speaker = 1 - speaker
    if rng.random() < 0.3:  # a filler line names no object, so the referent stays the same
        say(speaker, rng.choice(EN_FILLER if en else KO_FILLER))
        speaker = 1 - speaker
    say(speaker, rng.choice(EN_FINAL if en else KO_FINAL))

    option_lines = [f"{LETTERS[j]}) {o}" for j, o in enumerate(options)]
    prompt = "\n".join(
        lines
        + [
            "",
            EN_QUESTION if en else KO_QUESTION,
            EN_OPTIONS if en else KO_OPTIONS,
            *option_lines,
            "",
            EN_INSTRUCTION if en else KO_INSTRUCTION,
        ]
    )
    answer = f"{LETTERS[target]}) {options[target]}"
    meta: dict[str, Any] = {
        "option_photo": [p for p, _ in chosen],
        "option_object": [i for _, i in chosen],
        "referent": {
            "photo": photo,
            "index": index,
            "color": ref.color,
            "kind": ref.kind,
            "size": ref.size,
            "strategy": strategy,
            "property": prop,
            "line": ref_line,
        },
        "turns": turns,
        "lang": lang,
        "modality": modality,
        "scenes": [s.to_dict() for s in scenes],
    }
    return Item(
        scenes=scenes if modality != "caption" else [],
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        target=target,
        options=options,
        meta=meta,
    )
