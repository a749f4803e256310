"""Multiple-choice JSON for the coreference task (seed 002) -> `mcq` Examples.

The schema: a JSON list of records, or JSONL (one record per line). One record:

    {"id": "coref-0001",
     "turns": [{"speaker": "A", "text": "오늘 찍은 사진 올릴게.", "image": "photos/0001_a.jpg"},
               {"speaker": "B", "text": "멋지다, 내 사진도 봐.", "image": "photos/0001_b.jpg",
                "caption": "a white mug and a laptop on a desk"},
               {"speaker": "A", "text": "네가 올린 사진 속 컵이 예쁘다."},
               {"speaker": "B", "text": "나도 저거 마음에 들어."}],
     "question": "마지막 발화에서 '저거'가 가리키는 것은 무엇인가?",
     "options": ["A가 올린 사진 속 노트북", "B가 올린 사진 속 컵", "A가 올린 사진 속 컵", "B가 올린 사진 속 노트북"],
     "answer": "B",
     "option_photo": [0, 1, 0, 1]}

- id (str or int, unique), turns (non-empty list), question (str), options (exactly `n_options`=4
  distinct non-empty strings) and answer are required.
- A turn: speaker (str), text (str; may be "" for a turn that only posts a photo), and optionally
  image (a path, relative to the JSON file's folder) and/or caption (a text description of the photo).
  A turn with an image or a caption posts a photo; photos are numbered 1, 2, ... in order.
- answer: the gold option, as a letter "A".."D" (case-insensitive) or an int, 0-BASED (1 = "B").
- option_photo (optional): for each option, the photo it belongs to (0-based index into the posted
  photos, or any str/int id); it enables photo-level accuracy in the mcq metrics.
- group (optional, default: the id) and meta (optional object, kept) may be added; other keys are errors.

Rendering, like the synthetic coreference examples (vlmtune/data/synth/coref.py):

    A: "오늘 찍은 사진 올릴게."
    (사진 1: <image>)
    B: "멋지다, 내 사진도 봐."
    (사진 2: <image> a white mug and a laptop on a desk)
    ...

    질문: 마지막 발화에서 '저거'가 가리키는 것은 무엇인가?
    선택지:
    A) A가 올린 사진 속 노트북
    ...

    보기의 기호와 내용으로 답하시오.

-> assistant "B) B가 올린 사진 속 컵"; target = 1 (the option index), options = the option texts,
images = the turns' images in order (one `<image>` each). Headers are Korean when the question or
options contain Hangul (lang="auto"), else English ("Question:", "Options:", "Answer with the letter
and the option."); a question already starting with "Question:"/"질문:" is not prefixed again.
meta: option_photo (when given), turns [[speaker, text]], lang, modality ("image" | "caption" | "both" |
"mixed" | "none"), n_photos, plus the record's own meta.

With `skip_invalid=True` bad records (and, in JSONL, lines that are not JSON) are skipped, counted and
written to `<file>.rejects.jsonl`; a JSON list that does not parse always raises. JSONL is streamed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example, RecordReader, example_from_dict
from vlmtune.data.formats.records import check_image_once, json_records
from vlmtune.data.synth.coref import EN_INSTRUCTION, EN_OPTIONS, KO_INSTRUCTION, KO_OPTIONS, LETTERS
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS

KEYS = {"id", "turns", "question", "options", "answer", "option_photo", "group", "meta"}
TURN_KEYS = {"speaker", "text", "image", "caption"}
LANGS = ("auto", "en", "ko")
_HANGUL = re.compile("[\uac00-\ud7a3]")
_QUESTION_PREFIX = re.compile(r"^\s*(?:question|질문)\s*[:：]", re.I)


@FORMATS.register("mcq_json", help="multiple-choice JSON/JSONL (dialogue turns with photos, 4 options) -> mcq")
def read_mcq_json(
    path: str | os.PathLike,
    *,
    n_options: int = 4,
    lang: str = "auto",
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream `mcq` Examples from a JSON list or JSONL file in the schema of the module docstring.

    n_options: how many options every record must have (2..4; the mcq task letters them A-D).
    lang: "auto" (Korean headers when the question/options contain Hangul), "en" or "ko".
    Returns a RecordReader: iterate it; afterwards `.rejected` counts skipped records.
    """
    path = Path(path)
    if lang not in LANGS:
        raise ConfigError(f"mcq_json lang='{lang}' is not supported; use one of {', '.join(LANGS)}")
    if not 2 <= n_options <= len(LETTERS):
        raise ConfigError(f"mcq_json n_options must be 2..{len(LETTERS)}, got {n_options}")
    checked: dict[str, DataError | None] = {}
    file = str(path)

    def build(obj: Any, line: int | None, name: str, index: int) -> Example:
        def fail(msg: str, field: str | None, fix: str | None = None) -> DataError:
            return DataError(f"{name}: {msg}", file=file, line=line, field=field, fix=fix)

        if not isinstance(obj, dict):
            raise fail(
                f"expected a JSON object, got {type(obj).__name__}",
                None,
                "each record is {id, turns, question, options, answer}",
            )
        for key in ("id", "turns", "question", "options", "answer"):
            if key not in obj:
                raise fail("missing", key, "records need id, turns, question, options and answer (see docs/formats.md)")
        unknown = sorted(set(obj) - KEYS)
        if unknown:
            raise fail(f"unknown field(s) {unknown}", unknown[0], "put extra information under 'meta'")
        if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool) or str(obj["id"]) == "":
            raise fail("must be a non-empty string or int", "id")
        turns = obj["turns"]
        if not isinstance(turns, list) or not turns:
            raise fail("must be a non-empty list of {speaker, text, image?, caption?}", "turns")
        options = obj["options"]
        if (
            not isinstance(options, list)
            or len(options) != n_options
            or not all(isinstance(o, str) and o.strip() for o in options)
        ):
            got = f"{len(options)} items" if isinstance(options, list) else type(options).__name__
            raise fail(f"must be {n_options} non-empty strings, got {got}", "options")
        if len({o.strip() for o in options}) != len(options):
            raise fail("two options have the same text", "options", "every option must name a different object")
        question = obj["question"]
        if not isinstance(question, str) or not question.strip():
            raise fail("must be a non-empty string", "question")
        target = _answer_index(obj["answer"], n_options, fail)
        ko = _is_ko(lang, question, options)

        lines: list[str] = []
        images: list[str] = []
        spoken: list[list[str]] = []
        kinds: set[str] = set()
        n_photos = 0
        for j, t in enumerate(turns):
            where = f"turns[{j}]"
            if not isinstance(t, dict):
                raise fail("must be an object {speaker, text, image?, caption?}", where)
            bad = sorted(set(t) - TURN_KEYS)
            if bad:
                raise fail(f"unknown field(s) {bad}", f"{where}.{bad[0]}", f"a turn has {', '.join(sorted(TURN_KEYS))}")
            speaker, text = t.get("speaker"), t.get("text", "")
            if not isinstance(speaker, str) or not speaker.strip():
                raise fail("must be a non-empty string", f"{where}.speaker")
            if not isinstance(text, str):
                raise fail("must be a string", f"{where}.text")
            if IMAGE_TOKEN in text:
                raise fail(
                    f"contains {IMAGE_TOKEN}",
                    f"{where}.text",
                    "give the photo as 'image'; the reader places the placeholder",
                )
            if text:
                lines.append(f'{speaker}: "{text}"')
                spoken.append([speaker, text])
            image, cap = t.get("image"), t.get("caption")
            if image is None and cap is None:
                continue
            parts = []
            if image is not None:
                if not isinstance(image, str) or not image:
                    raise fail("must be a path string", f"{where}.image")
                p = Path(image) if Path(image).is_absolute() else path.parent / image
                if not p.is_file():
                    raise fail(
                        f"image not found: {p}",
                        f"{where}.image",
                        "image paths are resolved relative to the JSON file's folder",
                    )
                if check_images:
                    check_image_once(p, checked, file=file, line=line, field=f"{where}.image")
                images.append(str(p.resolve()))
                parts.append(IMAGE_TOKEN)
            if cap is not None:
                if not isinstance(cap, str) or not cap.strip():
                    raise fail("must be a non-empty string", f"{where}.caption")
                parts.append(cap.strip())
            kinds.add("both" if image is not None and cap is not None else "image" if image is not None else "caption")
            n_photos += 1
            lines.append(f"({'사진' if ko else 'Photo'} {n_photos}: {' '.join(parts)})")

        photo = obj.get("option_photo")
        if photo is not None:
            if (
                not isinstance(photo, list)
                or len(photo) != len(options)
                or not all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in photo)
            ):
                raise fail(f"must list one photo (int or str) per option ({len(options)})", "option_photo")
            out_of_range = [x for x in photo if isinstance(x, int) and not 0 <= x < max(n_photos, 1)]
            if n_photos and out_of_range:
                raise fail(
                    f"photo index {out_of_range[0]} is not one of the {n_photos} posted photos (0-based)",
                    "option_photo",
                )
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise fail("must be an object", "meta")

        q = question.strip()
        if not _QUESTION_PREFIX.match(q):
            q = ("질문: " if ko else "Question: ") + q
        prompt = "\n".join(
            lines
            + [
                "",
                q,
                KO_OPTIONS if ko else EN_OPTIONS,
                *(f"{LETTERS[k]}) {o}" for k, o in enumerate(options)),
                "",
                KO_INSTRUCTION if ko else EN_INSTRUCTION,
            ]
        )
        modality = "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
        rec = {
            "id": str(obj["id"]),
            "task": "mcq",
            "images": images,
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": f"{LETTERS[target]}) {options[target]}"},
            ],
            "target": target,
            "options": list(options),
            "group": str(obj["group"]) if obj.get("group") is not None else str(obj["id"]),
            "meta": {
                **meta,
                **({"option_photo": list(photo)} if photo is not None else {}),
                "turns": spoken,
                "lang": "ko" if ko else "en",
                "modality": modality,
                "n_photos": n_photos,
            },
        }
        return example_from_dict(rec, file=file, line=line, check_images=False)

    return RecordReader(
        path, json_records(path, build, what="an mcq JSON list or JSONL file"), skip_invalid=skip_invalid
    )


def _is_ko(lang: str, question: str, options: list[str]) -> bool:
    if lang != "auto":
        return lang == "ko"
    return bool(_HANGUL.search(question) or any(_HANGUL.search(o) for o in options))


def _answer_index(answer: Any, n: int, fail: Any) -> int:
    letters = LETTERS[:n]
    if isinstance(answer, bool):
        raise fail(f"must be a letter {letters[0]}-{letters[-1]} or an int index, got {answer!r}", "answer")
    if isinstance(answer, int):
        if not 0 <= answer < n:
            raise fail(
                f"index {answer} is out of range for {n} options (0-based: 0..{n - 1})",
                "answer",
                f"give a 0-based index or a letter {letters[0]}-{letters[-1]}",
            )
        return answer
    if isinstance(answer, str):
        m = re.fullmatch(r"\s*\(?([A-Za-z])\)?\s*", answer)
        if m and m.group(1).upper() in letters:
            return letters.index(m.group(1).upper())
    raise fail(
        f"{answer!r} is not one of the letters {', '.join(letters)} or a 0-based index 0..{n - 1}",
        "answer",
        f"give a letter {letters[0]}-{letters[-1]} or a 0-based int",
    )
