"""VisDial v1.0 dialog files (train / val / test) -> one `dialog` Example per (dialog, round).

    reader = read_visdial("visdial_1.0_val.json", image_dirs=["images/VisualDialog_val2018"],
                          dense="visdial_1.0_val_dense_annotations.json")
    examples = list(reader)                          # 10 rounds x 2064 dialogs
    test = list(read_visdial("visdial_1.0_test.json", image_dirs=["images"], include_unanswered=True))

The file (VisDial v1.0's release format, https://visualdialog.org/data; docs/formats.md):
`{"split", "data": {"questions": [str], "answers": [str], "dialogs": [{"image_id", "caption", "dialog":
[{"question": idx, "answer": idx, "answer_options": [100 idx], "gt_index": int}]}]}}`. The file is streamed with ijson: the question and answer tables are
read first (they are what every round indexes into), then the dialogs one at a time, so memory holds the
two tables and one dialog, not the whole file (`json.load` of the train file, 123,287 dialogs, takes several GB;
`benchmarks/visdial_read.py` measures both). A file that is not valid JSON, or is not shaped like a VisDial
file, is parsed once more with `json` to name the line and field.

Example for round r (1-based), the same shape as the synthetic dialogs (vlmtune/data/synth/visdial.py):

    user:      <image>\\n{instruction}\\nCaption: {caption}\\n{question 1}?
    assistant: {answer 1}                       <- gold history, rounds 1..r-1
    ...
    user:      {question r}?
    assistant: {answer r}                       <- the training target; never in the model input

`options` = round r's OWN 100 `answer_options` (as strings); target = {"answer", "gt_index",
"relevance", "round": r}; relevance = the dense annotation's `gt_relevance` for (image_id, round r)
when a dense file is given and annotates that round, else null. VisDial questions are stored without
"?"; one is added (question_mark=True), as the official starter code does. id =
`visdial-{split}-{image_id}-{r}`, group = `visdial-{image_id}` (every round of an image in one split),
meta = {image_id, round_id, question, caption, split, n_rounds, dense, source}.
A round whose `gt_index` is missing but whose answer is among its options gets the gt_index of that
option; an answer that is not among its options is an error.

Images are looked up by the official names, by split: train -> `COCO_train2014_%012d.jpg` or
`COCO_val2014_%012d.jpg` (VisDial v1.0 train uses both COCO sets), val -> `VisualDialog_val2018_%012d.jpg`,
test -> `VisualDialog_test2018_%012d.jpg` (split from the file's "split", or the `split` argument; all
names when neither is known), in each of `image_dirs` and in its conventional subfolders (train2014/,
val2014/, VisualDialog_val2018/, VisualDialog_test2018/). A missing image is an error naming the
image_id, the names tried and the folders searched.

The test split: each dialog stops at a round whose question has no answer (`answer` missing or -1,
no `gt_index`); the earlier rounds have answers but no `answer_options`. Those earlier rounds are
history only (never Examples). The unanswered round becomes an Example only with
`include_unanswered=True` (to predict on it, e.g. for an EvalAI submission
`[{"image_id", "round_id", "ranks"}]`): its messages end with the question, its target is
{"answer": null, "gt_index": null, "relevance": null, "round": r}, and evaluation tasks reject it
(dialog.check_target), since there is nothing to score against. Without the flag those rounds are
skipped and counted in `reader.skipped["unanswered"]` (logged). An unanswered round anywhere but last
is an error (the later rounds' history would be incomplete).

`rounds="last"` keeps only each dialog's last round (VisDial's "answer the final question" setting);
"all" keeps every round. With `skip_invalid=True`, a bad (dialog, round) is skipped, counted and written
to `<file>.rejects.jsonl`; a file that is not valid JSON, or a bad dense-annotation file, always raises.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example, Record, RecordReader, example_from_dict
from vlmtune.data.formats.records import check_image_once, load_json, stream_json
from vlmtune.data.synth.visdial import DIALOG_INSTRUCTION
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS

log = logging.getLogger(__name__)

N_OPTIONS = 100
IMAGE_NAMES = {
    "train": ("COCO_train2014_%012d.jpg", "COCO_val2014_%012d.jpg"),
    "val": ("VisualDialog_val2018_%012d.jpg",),
    "test": ("VisualDialog_test2018_%012d.jpg",),
}
IMAGE_SUBDIRS = ("train2014", "val2014", "VisualDialog_val2018", "VisualDialog_test2018")
ROUNDS = ("all", "last")
_NO_ANSWER = (None, -1)


def image_names(image_id: int, split: str | None) -> list[str]:
    """The official file names an image may have in `split` (every convention when split is None)."""
    patterns = IMAGE_NAMES.get(split or "", tuple(p for ps in IMAGE_NAMES.values() for p in ps))
    return [p % image_id for p in patterns]


class ImageFinder:
    """Finds a file name in a list of folders (and their conventional subfolders), listing each folder once."""

    def __init__(self, dirs: Sequence[Path]):
        self.dirs = [d for base in dirs for d in [base, *(base / s for s in IMAGE_SUBDIRS)] if d.is_dir()]
        self.searched = [str(d) for d in dirs]
        self._listing: dict[Path, set[str]] = {}

    def find(self, names: Sequence[str]) -> Path | None:
        for d in self.dirs:
            if d not in self._listing:
                self._listing[d] = set(os.listdir(d))  # one listdir instead of a stat per name per image
            for n in names:
                if n in self._listing[d]:
                    return d / n
        return None


@FORMATS.register("visdial", help="VisDial v1.0 dialog JSON (+ dense annotations) -> dialog examples per round")
def read_visdial(
    path: str | os.PathLike,
    *,
    image_dirs: Sequence[str | os.PathLike] | str | None = None,
    dense: str | os.PathLike | None = None,
    rounds: str = "all",
    include_unanswered: bool = False,
    split: str | None = None,
    instruction: str = DIALOG_INSTRUCTION,
    question_mark: bool = True,
    n_options: int = N_OPTIONS,
    dense_round_base: int = 1,
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream `dialog` Examples from a VisDial v1.0 dialog file (see the module docstring).

    image_dirs: folders holding the images (default: the JSON file's folder).
    dense: the dense-annotation file `[{"image_id", "round_id", "gt_relevance": [100]}]` ("relevance" is
        accepted as the key too); round_id counts from `dense_round_base` (1 in the official val file).
    rounds: "all" or "last". include_unanswered: emit test rounds without an answer (target answer null).
    split: "train" | "val" | "test"; default: the file's own "split" (it picks the image names).
    Returns a RecordReader (`.rejected`, `.rejects_path`), plus `.skipped`: a Counter of rounds left out
    on purpose ("unanswered", "history_only").
    """
    path = Path(path)
    if rounds not in ROUNDS:
        raise ConfigError(f"visdial rounds='{rounds}' is not supported; use one of {', '.join(ROUNDS)}")
    if split is not None and split not in IMAGE_NAMES:
        raise ConfigError(f"visdial split='{split}' is not supported; use one of {', '.join(IMAGE_NAMES)}")
    questions, answers, dialogs, file_split = _stream_top(path)
    split = split or (file_split if file_split in IMAGE_NAMES else None)
    dirs = (
        [Path(image_dirs)]
        if isinstance(image_dirs, (str, os.PathLike))
        else [Path(d) for d in image_dirs]
        if image_dirs is not None
        else [path.parent]
    )
    finder = ImageFinder(dirs)
    relevance = _load_dense(Path(dense), n_options, dense_round_base) if dense is not None else {}
    dense_images = {img for img, _ in relevance}
    dense_rounds: dict[int, int] = {}
    for img, r in relevance:
        dense_rounds[img] = max(r, dense_rounds.get(img, 0))
    checked: dict[str, DataError | None] = {}
    images: dict[int, Path] = {}
    skipped: Counter[str] = Counter()
    file = str(path)

    def where(d: Any, i: int, r: int | None = None) -> str:
        img = d.get("image_id") if isinstance(d, dict) else None
        return f"dialog {i} (image_id {img})" + (f" round {r}" if r is not None else "")

    current: list[Any] = [None]  # the dialog being built (the stream holds one at a time)

    def fail(msg: str, i: int, r: int | None, field: str, fix: str | None = None) -> DataError:
        return DataError(f"{where(current[0], i, r)}: {msg}", file=file, field=field, fix=fix)

    def dialog_parts(d: Any, i: int) -> tuple[int, str, list[Any], Path]:
        base = f"data.dialogs[{i}]"
        if not isinstance(d, dict):
            raise fail(f"expected an object, got {type(d).__name__}", i, None, base)
        img = d.get("image_id")
        if not isinstance(img, int) or isinstance(img, bool):
            raise fail(f"image_id must be an integer, got {img!r}", i, None, f"{base}.image_id")
        cap = d.get("caption")
        if not isinstance(cap, str):
            raise fail(f"caption must be a string, got {type(cap).__name__}", i, None, f"{base}.caption")
        rds = d.get("dialog")
        if not isinstance(rds, list) or not rds:
            raise fail("dialog must be a non-empty list of rounds", i, None, f"{base}.dialog")
        if img not in images:
            names = image_names(img, split)
            found = finder.find(names)
            if found is None:
                raise fail(
                    f"image not found: tried {names} in {finder.searched} (and their subfolders "
                    f"{', '.join(IMAGE_SUBDIRS)})",
                    i,
                    None,
                    f"{base}.image_id",
                    "download the VisDial v1.0 images (train: COCO train2014 + val2014; val: "
                    "VisualDialog_val2018; test: VisualDialog_test2018) and pass their folders as image_dirs",
                )
            images[img] = found.resolve()
        if check_images:
            check_image_once(images[img], checked, file=file, line=None, field=f"{base}.image_id")
        return img, cap, rds, images[img]

    def text(table: list[str], idx: Any, what: str, i: int, r: int, field: str) -> str:
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(table):
            raise fail(
                f"{what} index {idx!r} is not in data.{what}s (0..{len(table) - 1})",
                i,
                r,
                field,
                f"a round's {what} is a 0-based int index into data.{what}s: check that the file is complete "
                "and is one VisDial v1.0 file (indices of one split's file do not fit another's tables)",
            )
        return table[idx]

    def question(rd: Any, i: int, r: int) -> str:
        base = f"data.dialogs[{i}].dialog[{r - 1}]"
        if not isinstance(rd, dict):
            raise fail(f"a round must be an object, got {type(rd).__name__}", i, r, base)
        q = text(questions, rd.get("question"), "question", i, r, f"{base}.question").strip()
        return q + "?" if question_mark and not q.endswith("?") else q

    def build(d: Any, i: int, r: int) -> Example:
        current[0] = d
        img, cap, rds, image = dialog_parts(d, i)
        base = f"data.dialogs[{i}].dialog[{r - 1}]"
        msgs: list[dict[str, str]] = []
        for k in range(1, r + 1):
            q = question(rds[k - 1], i, k)
            msgs.append(
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{instruction}\nCaption: {cap}\n{q}" if k == 1 else q}
            )
            if k < r:  # gold history: rounds 1..r-1 only
                a = rds[k - 1].get("answer")
                if a in _NO_ANSWER:
                    raise fail(
                        f"round {k} has no answer, but round {r} follows it",
                        i,
                        r,
                        f"data.dialogs[{i}].dialog[{k - 1}].answer",
                        "only a dialog's last round may be unanswered (VisDial test split)",
                    )
                msgs.append(
                    {
                        "role": "assistant",
                        "content": text(answers, a, "answer", i, r, f"data.dialogs[{i}].dialog[{k - 1}].answer"),
                    }
                )
        rd = rds[r - 1]
        q = question(rd, i, r)
        opt_idx = rd.get("answer_options")
        if not isinstance(opt_idx, list) or len(opt_idx) != n_options:
            got = f"{len(opt_idx)} options" if isinstance(opt_idx, list) else repr(type(opt_idx).__name__)
            raise fail(
                f"answer_options must list {n_options} answer indices, got {got}",
                i,
                r,
                f"{base}.answer_options",
                f"every scored round needs its own {n_options} candidates",
            )
        options = [text(answers, x, "answer", i, r, f"{base}.answer_options") for x in opt_idx]
        a_idx = rd.get("answer")
        if a_idx in _NO_ANSWER:
            answer, gt = None, None
        else:
            answer = text(answers, a_idx, "answer", i, r, f"{base}.answer")
            gt = rd.get("gt_index")
            if gt is None and a_idx in opt_idx:
                gt = opt_idx.index(a_idx)
            if not isinstance(gt, int) or isinstance(gt, bool) or not 0 <= gt < n_options:
                raise fail(
                    f"gt_index {gt!r} is not an index into the round's {n_options} options (0-based)",
                    i,
                    r,
                    f"{base}.gt_index",
                    "gt_index must point at the gold answer in this round's answer_options",
                )
            if opt_idx[gt] != a_idx:
                raise fail(
                    f"answer_options[gt_index={gt}] is {options[gt]!r} but the answer is {answer!r}",
                    i,
                    r,
                    f"{base}.gt_index",
                    "gt_index must point at the gold answer in this round's answer_options",
                )
            msgs.append({"role": "assistant", "content": answer})
        rel = relevance.get((img, r))
        target = {"answer": answer, "gt_index": gt, "relevance": list(rel) if rel is not None else None, "round": r}
        obj = {
            "id": f"visdial-{split or 'unknown'}-{img}-{r}",
            "task": "dialog",
            "images": [str(image)],
            "messages": msgs,
            "target": target,
            "options": options,
            "group": f"visdial-{img}",
            "meta": {
                "image_id": img,
                "round_id": r,
                "question": q,
                "caption": cap,
                "split": split,
                "n_rounds": len(rds),
                "dense": rel is not None,
                "source": "visdial",
            },
        }
        return example_from_dict(obj, file=file, check_images=False)

    def records() -> Iterator[Record]:
        for i, d in enumerate(dialogs):
            rds = d.get("dialog") if isinstance(d, dict) else None
            n = len(rds) if isinstance(rds, list) else 0
            img = d.get("image_id") if isinstance(d, dict) else None
            if img in dense_images:
                dense_images.discard(img)
                if n and dense_rounds[img] > n:
                    raise DataError(
                        f"dense annotation for image_id {img} round {dense_rounds[img]}, but that "
                        f"dialog has {n} round(s)",
                        file=str(dense),
                        field="round_id",
                        fix="check that the dense file belongs to this dialog file, and its round_id "
                        "base (dense_round_base)",
                    )
            # n == 0: one record, whose build reports what is wrong with the dialog
            wanted = [1] if n == 0 else range(1, n + 1) if rounds == "all" else [n]
            for r in wanted:
                rd = rds[r - 1] if n and isinstance(rds, list) else None
                if isinstance(rd, dict):
                    if rd.get("answer") in _NO_ANSWER and r == n and not include_unanswered:
                        skipped["unanswered"] += 1
                        continue
                    if split == "test" and "answer_options" not in rd and rd.get("answer") not in _NO_ANSWER:
                        skipped["history_only"] += 1
                        continue
                raw = json.dumps(
                    {"image_id": d.get("image_id") if isinstance(d, dict) else None, "round": r, "round_record": rd},
                    ensure_ascii=False,
                    default=str,
                )
                yield Record(name=where(d, i, r), raw=raw, build=functools.partial(build, d, i, r))
        if dense_images:
            log.warning(
                "%s: %d dense annotation(s) are for images not in the dialog file (first: %s)",
                dense,
                len(dense_images),
                min(dense_images),
            )
        if skipped["unanswered"]:
            log.warning(
                "%s: left out %d unanswered round(s) (the test split's last rounds); pass "
                "include_unanswered=True to predict on them for a submission",
                path,
                skipped["unanswered"],
            )

    reader = RecordReader(path, records(), skip_invalid=skip_invalid)
    reader.skipped = skipped  # type: ignore[attr-defined]
    return reader


# --- file-level checks (always fatal) -------------------------------------------------------------------


def _check_top(obj: Any, path: Path) -> tuple[list[str], list[str], list[Any], str | None]:
    fix = 'a VisDial v1.0 file is {"split", "data": {"questions": [...], "answers": [...], "dialogs": [...]}}'
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), dict):
        raise DataError("no 'data' object at the top level", file=str(path), field="data", fix=fix)
    data = obj["data"]
    for key in ("questions", "answers", "dialogs"):
        if not isinstance(data.get(key), list):
            raise DataError(f"data.{key} must be a list", file=str(path), field=f"data.{key}", fix=fix)
    for key in ("questions", "answers"):
        bad = next((j for j, s in enumerate(data[key]) if not isinstance(s, str)), None)
        if bad is not None:
            raise DataError(f"data.{key}[{bad}] is not a string", file=str(path), field=f"data.{key}[{bad}]", fix=fix)
    split = obj.get("split")
    return data["questions"], data["answers"], data["dialogs"], split if isinstance(split, str) else None


def _load_dense(path: Path, n_options: int, base: int) -> dict[tuple[int, int], list[float]]:
    """(image_id, round 1-based) -> relevance list, validated."""
    obj = load_json(path, "a VisDial dense-annotation file")
    fix = 'dense annotations are [{"image_id": int, "round_id": int, "gt_relevance": [100 floats]}]'
    if not isinstance(obj, list):
        raise DataError("expected a JSON list", file=str(path), fix=fix)
    out: dict[tuple[int, int], list[float]] = {}
    for j, e in enumerate(obj):
        if not isinstance(e, dict):
            raise DataError("expected an object", file=str(path), field=f"[{j}]", fix=fix)
        img, rid = e.get("image_id"), e.get("round_id")
        rel = e.get("gt_relevance", e.get("relevance"))
        if not isinstance(img, int) or not isinstance(rid, int) or isinstance(rid, bool):
            raise DataError(
                f"entry {j}: image_id and round_id must be integers, got {img!r}, {rid!r}",
                file=str(path),
                field=f"[{j}]",
                fix=fix,
            )
        if (
            not isinstance(rel, list)
            or len(rel) != n_options
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rel)
        ):
            got = f"{len(rel)} values" if isinstance(rel, list) else type(rel).__name__
            raise DataError(
                f"entry {j} (image_id {img}): gt_relevance must be {n_options} numbers, got {got}",
                file=str(path),
                field=f"[{j}].gt_relevance",
                fix=fix,
            )
        r = rid - base + 1
        if r < 1:
            raise DataError(
                f"entry {j} (image_id {img}): round_id {rid} is below {base}",
                file=str(path),
                field=f"[{j}].round_id",
                fix="round_id is 1-based in VisDial v1.0 val; set dense_round_base=0 for a file that counts from 0",
            )
        if (img, r) in out:
            raise DataError(
                f"entry {j}: a second annotation for image_id {img} round {r}",
                file=str(path),
                field=f"[{j}]",
                fix="keep one dense annotation per (image_id, round_id)",
            )
        out[(img, r)] = [float(v) for v in rel]
    return out


def _stream_top(path: Path) -> tuple[list[str], list[str], Iterator[Any], str | None]:
    """The question and answer tables and the split, then an iterator over the dialogs, streamed with ijson.

    Anything off (not JSON, not UTF-8, a missing or mistyped table) is reported by parsing the file with
    `json` (`load_json` + `_check_top`), which names the line or field; that costs memory only on error."""
    import ijson

    what = "a VisDial v1.0 dialog file"

    def exact_error() -> Exception:
        _check_top(load_json(path, what), path)  # raises for bad JSON / UTF-8, then for a bad shape
        return DataError(
            "the streaming JSON parser (ijson) rejected the file, but json accepts it",
            file=str(path),
            fix="report this; meanwhile convert the file with another tool",
        )

    if not path.exists():
        raise DataError("file not found", file=str(path), fix=f"check the path to {what}")
    split = next(stream_json(path, "split", what=what, on_error=exact_error), None)
    questions = next(stream_json(path, "data.questions", what=what, on_error=exact_error), None)
    answers = next(stream_json(path, "data.answers", what=what, on_error=exact_error), None)
    if not (
        isinstance(questions, list)
        and isinstance(answers, list)
        and all(isinstance(x, str) for t in (questions, answers) for x in t)
    ):
        raise exact_error()

    def dialogs() -> Iterator[Any]:
        n = 0
        for d in stream_json(path, "data.dialogs.item", what=what, on_error=exact_error):
            n += 1
            yield d
        if n == 0:  # an empty list is fine; a missing or mistyped one is an error
            with open(path, "rb") as f:
                kinds = [
                    e
                    for p, e, _ in ijson.parse(f)
                    if p == "data.dialogs" and e in ("start_array", "start_map", "string", "number", "null")
                ]
            if kinds[:1] != ["start_array"]:
                raise exact_error()

    return questions, answers, dialogs(), split if isinstance(split, str) else None
