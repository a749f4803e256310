"""Image classification from one subfolder per class (seed 003's `raw_data/0_irrelevant/...` layout).

    raw_data/
      0_irrelevant/      img001.jpg  img002.png ...
      1_chat_history/    ...
      2_drug_trade/      ...
      3_drug_sample/     ...

    reader = read_imagefolder("raw_data", labels={"0_irrelevant": "관련 없음", "1_chat_history": "마약 투약 내역 사진",
                                                  "2_drug_trade": "마약 거래 대화", "3_drug_sample": "마약 실물"})
    examples = list(reader)      # one `classify` Example per image, options = the labels in folder order

Labels: a `labels` mapping {folder name: label} (labels may be any text, e.g. Korean); every class folder
must be in it and every key must be a folder (a typo is an error, never an unlabelled class). Without a
mapping the label is the folder name, with a numeric prefix ("0_", "12-", "3.") stripped when
`strip_prefix=True`. Folders are ordered by their numeric prefix, then by name; that order is the
option order. Files are found recursively in each class folder; files without an image extension and
hidden files are ignored (their number is logged).

Each Example: `<image>\\n{prompt}` -> label; target = the label, options = every label, id =
`{folder}/{path without extension}`, meta = {"folder", "file"}. group = the file stem, rewritten by
`group_pattern`: a regex whose named group `group` (or first group) becomes the group when it matches
the stem. The default glues augmented copies to their source (`x_aug1.jpg`, `x-aug2.png` -> group `x`),
so `split_examples` never separates them; pass `group_pattern=None` for the plain stem.

An image that cannot be decoded is a DataError naming the file; with `skip_invalid=True` it is skipped,
counted and written to `<root>.rejects.jsonl` (next to the folder), as the jsonl reader does.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from vlmtune.data.example import IMAGE_TOKEN, Example, Record, RecordReader, example_from_dict
from vlmtune.data.formats.records import check_image_once
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_PROMPT = "Which category does this image belong to? Answer with one of: {labels}."
DEFAULT_GROUP_PATTERN = r"^(?P<group>.+?)[_-]aug\d+$"
_PREFIX = re.compile(r"^(\d+)[_\-. ]+(?=\S)")


# --- class names ----------------------------------------------------------------------------------------


def strip_numeric_prefix(name: str) -> str:
    """'0_irrelevant' -> 'irrelevant', '12-cat' -> 'cat'; names without a numeric prefix are unchanged."""
    return _PREFIX.sub("", name)


def _folder_order(name: str) -> tuple[int, int, str]:
    m = _PREFIX.match(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def class_folders(root: Path) -> list[str]:
    """Class folder names under root, ordered by numeric prefix then name (hidden folders skipped)."""
    return sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_folder_order)


def group_of(stem: str, pattern: str | re.Pattern[str] | None) -> str:
    """The split group of a file stem: the pattern's `group` (or first) group when it matches, else the stem."""
    if pattern is None:
        return stem
    m = re.match(pattern, stem)
    if not m:
        return stem
    g = m.groupdict().get("group") if m.groupdict() else (m.group(1) if m.groups() else None)
    return g or stem


# --- the reader -----------------------------------------------------------------------------------------


@FORMATS.register("imagefolder", help="one subfolder per class (raw_data/0_irrelevant/...) -> classify examples")
def read_imagefolder(
    root: str | os.PathLike,
    *,
    labels: Mapping[str, str] | None = None,
    strip_prefix: bool = True,
    prompt: str = DEFAULT_PROMPT,
    task: str = "classify",
    group_pattern: str | None = DEFAULT_GROUP_PATTERN,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream `classify` Examples from ROOT/<class folder>/**/<image>.

    labels: {folder: label}; default: the folder names (numeric prefix stripped if strip_prefix).
    prompt: the question; `{labels}` is replaced by the labels joined with ", ".
    group_pattern: regex applied to the file stem to find its group (see the module docstring).
    extensions: file suffixes (case-insensitive) that count as images.
    Returns a RecordReader: iterate it; afterwards `.rejected` counts skipped images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            "not a directory", file=str(root), fix="give the folder that holds one subfolder per class, e.g. raw_data/"
        )
    folders = class_folders(root)
    if not folders:
        raise DataError(
            "no class subfolders found",
            file=str(root),
            fix="put the images of each class in their own subfolder, e.g. raw_data/0_irrelevant/",
        )
    folder_label = _labels(root, folders, labels, strip_prefix)
    label_list = [folder_label[f] for f in folders]
    try:
        text = prompt.format(labels=", ".join(label_list))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"imagefolder prompt {prompt!r} cannot be formatted ({type(e).__name__}: {e}); "
            "the only placeholder is {labels} (write {{ and }} for literal braces)"
        ) from None
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    checked: dict[str, DataError | None] = {}

    def records() -> Iterator[Record]:
        ignored = 0
        for folder in folders:
            files = sorted(p for p in (root / folder).rglob("*") if p.is_file())
            for p in files:
                rel = p.relative_to(root)
                if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in exts:
                    ignored += 1
                    continue
                yield Record(name=str(rel), raw=str(rel), build=functools.partial(_build, p, rel, folder))
        if ignored:
            log.info(
                "%s: ignored %d file(s) that are hidden or have no image extension (%s)",
                root,
                ignored,
                ", ".join(sorted(exts)),
            )

    def _build(p: Path, rel: Path, folder: str) -> Example:
        if check_images:
            check_image_once(p, checked, file=str(rel), line=None, field="image")
        label = folder_label[folder]
        obj = {
            "id": rel.with_suffix("").as_posix(),
            "task": task,
            "images": [str(p.resolve())],
            "messages": [
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{text}"},
                {"role": "assistant", "content": label},
            ],
            "target": label,
            "options": list(label_list),
            "group": group_of(p.stem, group_pattern),
            "meta": {"folder": folder, "file": rel.as_posix()},
        }
        return example_from_dict(obj, file=str(root), check_images=False)

    return RecordReader(root, records(), skip_invalid=skip_invalid)


def _labels(root: Path, folders: list[str], labels: Mapping[str, str] | None, strip_prefix: bool) -> dict[str, str]:
    if labels is None:
        out = {f: strip_numeric_prefix(f) if strip_prefix else f for f in folders}
    else:
        import difflib

        unknown = [k for k in labels if k not in folders]
        if unknown:
            close = difflib.get_close_matches(unknown[0], folders, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DataError(
                f"labels names folder(s) {unknown} that are not in {root}",
                file=str(root),
                field="labels",
                fix=f"{hint}class folders: {', '.join(folders)}",
            )
        unmapped = [f for f in folders if f not in labels]
        if unmapped:
            raise DataError(
                f"class folder(s) {unmapped} have no label in the mapping",
                file=str(root),
                field="labels",
                fix="add them to labels ({folder: label}) or move them out of the root",
            )
        out = {f: str(labels[f]) for f in folders}
    bad = [f for f, lab in out.items() if not lab.strip()]
    if bad:
        raise DataError(
            f"folder(s) {bad} give an empty label",
            file=str(root),
            field="labels",
            fix="give every class a visible label",
        )
    seen: dict[str, str] = {}
    for f in folders:
        if out[f] in seen:
            raise DataError(
                f"folders '{seen[out[f]]}' and '{f}' have the same label '{out[f]}'",
                file=str(root),
                field="labels",
                fix="merge the folders or give them different labels",
            )
        seen[out[f]] = f
    return out
