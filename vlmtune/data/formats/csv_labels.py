"""A folder of frames plus a CSV of labels (seed 004: `frames/` + `labels.csv` with `id,count`).

    mall/
      frames/seq_000001.jpg  seq_000002.jpg ...
      labels.csv             id,count
                             1,35
                             2,41

    reader = read_csv_labels("mall/labels.csv")                     # frames_dir defaults to mall/frames
    reader = read_csv_labels("scenes.csv", frames_dir="imgs", file_column="file", label_column="scene",
                             task="classify")

Columns are configurable: `id_column` + `image_pattern` name the image (`seq_{id:06d}.jpg`: the id is
formatted as an int when it is one), or `file_column` holds the file name relative to `frames_dir`.

task="count" (default): the label column must hold a non-negative integer ("35"; "35.0" is read as 35);
anything else ("2.5", "many", "") is an error naming the CSV line. task="classify": the label is the
text; options = `labels` if given (a label outside it is an error) else every label in the file, sorted.
Each Example: `<image>\\n{prompt}` -> label; id = the image path without extension (`id_prefix` +
...), group = the image stem with augmented-copy suffixes removed (`group_pattern`, as imagefolder),
meta = {"csv_line", "csv_id", "file"}.

A row whose image is missing or unreadable is an error naming the CSV line and the path tried; with
`skip_invalid=True` bad rows are skipped, counted and written to `<csv>.rejects.jsonl`. A missing
column is always an error (it names the columns the file has). The CSV is streamed row by row (one
extra pass collects the label set for task="classify" without `labels`).
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example, Record, RecordReader, example_from_dict
from vlmtune.data.formats.imagefolder import DEFAULT_GROUP_PATTERN, DEFAULT_PROMPT, group_of
from vlmtune.data.formats.records import check_image_once
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS

COUNT_PROMPT = "How many people are in this frame?"
TASKS = ("count", "classify")
_INT = re.compile(r"\+?(\d+)(?:\.0*)?")


@FORMATS.register("csv_labels", help="frames folder + labels CSV (frames/ + labels.csv id,count) -> count/classify")
def read_csv_labels(
    path: str | os.PathLike,
    *,
    frames_dir: str | os.PathLike | None = None,
    id_column: str = "id",
    label_column: str = "count",
    image_pattern: str = "seq_{id:06d}.jpg",
    file_column: str | None = None,
    task: str = "count",
    prompt: str | None = None,
    labels: Sequence[str] | None = None,
    id_prefix: str = "",
    group_pattern: str | None = DEFAULT_GROUP_PATTERN,
    delimiter: str = ",",
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream `count` (or `classify`) Examples from a labels CSV and its frames folder.

    frames_dir: where the images are (default: `frames/` next to the CSV).
    prompt: the question (default: "How many people are in this frame?" for count; for classify the
        imagefolder default, where `{labels}` becomes the labels joined with ", ").
    Returns a RecordReader: iterate it; afterwards `.rejected` counts skipped rows.
    """
    path = Path(path)
    if task not in TASKS:
        raise ConfigError(f"csv_labels task='{task}' is not supported; use one of {', '.join(TASKS)}")
    if not path.exists():
        raise DataError("file not found", file=str(path), fix="check the path to the labels CSV")
    frames = Path(frames_dir) if frames_dir is not None else path.parent / "frames"
    if not frames.is_dir():
        raise DataError(
            f"frames folder not found: {frames}",
            file=str(path),
            field="frames_dir",
            fix="pass frames_dir= the folder that holds the images",
        )
    file = str(path)
    header = _header(path, delimiter)
    needed = [c for c in (id_column if file_column is None else file_column, label_column)]
    for col in needed:
        if col not in header:
            close = difflib.get_close_matches(col, header, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DataError(
                f"no column '{col}' in the header",
                file=file,
                line=1,
                field=col,
                fix=f"{hint}columns: {', '.join(header)} (set id_column / label_column / file_column)",
            )
    if task == "classify":
        label_list = (
            [str(x) for x in labels]
            if labels is not None
            else sorted(
                {v for _, row in _rows(path, delimiter) if (v := dict(zip(header, row)).get(label_column, "").strip())}
            )
        )
        try:
            text = (prompt or DEFAULT_PROMPT).format(labels=", ".join(label_list))
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"csv_labels prompt {prompt!r} cannot be formatted ({type(e).__name__}: {e}); the only "
                "placeholder is {labels} (write {{ and }} for literal braces)"
            ) from None
    else:
        label_list = None
        text = prompt or COUNT_PROMPT
    checked: dict[str, DataError | None] = {}

    def build(line: int, values: list[str]) -> Example:
        if len(values) > len(header):
            raise DataError(
                f"{len(values)} fields but the header has {len(header)}",
                file=file,
                line=line,
                fix="quote values that contain the delimiter",
            )
        row = dict(zip(header, values))
        key = (row.get(id_column) or "").strip()
        if file_column is not None:
            name = (row.get(file_column) or "").strip()
            if not name:
                raise DataError("empty file name", file=file, line=line, field=file_column)
        else:
            if not key:
                raise DataError("empty id", file=file, line=line, field=id_column)
            name = _format_name(image_pattern, key, file, line, id_column)
        img = frames / name
        if not img.is_file():
            raise DataError(
                f"image not found: {img}",
                file=file,
                line=line,
                field=file_column or id_column,
                fix=f"check frames_dir ({frames}) and "
                + (f"the '{file_column}' column" if file_column else f"image_pattern ({image_pattern!r})"),
            )
        if check_images:
            check_image_once(img, checked, file=file, line=line, field=file_column or id_column)
        raw = (row.get(label_column) or "").strip()
        if task == "count":
            m = _INT.fullmatch(raw)
            if not m:
                raise DataError(
                    f"count must be a non-negative integer, got {raw!r}",
                    file=file,
                    line=line,
                    field=label_column,
                    fix="fix the value, or use task='classify' for text labels",
                )
            target: Any = int(m.group(1))
            answer = str(target)
        else:
            if not raw:
                raise DataError("empty label", file=file, line=line, field=label_column)
            assert label_list is not None  # set for task == "classify"
            if raw not in label_list:
                raise DataError(
                    f"label {raw!r} is not one of the labels {label_list}",
                    file=file,
                    line=line,
                    field=label_column,
                    fix="add it to labels or fix the row",
                )
            target = answer = raw
        stem = Path(name).with_suffix("").as_posix()
        obj = {
            "id": f"{id_prefix}{stem}",
            "task": task,
            "images": [str(img.resolve())],
            "messages": [
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{text}"},
                {"role": "assistant", "content": answer},
            ],
            "target": target,
            "options": list(label_list) if label_list is not None else None,
            "group": group_of(Path(name).stem, group_pattern),
            "meta": {"csv_line": line, "csv_id": key or None, "file": name},
        }
        return example_from_dict(obj, file=file, line=line, check_images=False)

    def records() -> Iterator[Record]:
        for line, row in _rows(path, delimiter):
            buf = io.StringIO()
            csv.writer(buf, delimiter=delimiter).writerow(row)
            yield Record(
                name=f"line {line}",
                raw=buf.getvalue().rstrip("\r\n"),
                line=line,
                build=functools.partial(build, line, row),
            )

    return RecordReader(path, records(), skip_invalid=skip_invalid)


def _format_name(pattern: str, key: str, file: str, line: int, column: str) -> str:
    value: Any = int(key) if re.fullmatch(r"[+-]?\d+", key) else key
    try:
        return pattern.format(id=value)
    except (ValueError, KeyError, IndexError) as e:
        raise DataError(
            f"cannot build the file name from id {key!r} with image_pattern {pattern!r} ({type(e).__name__}: {e})",
            file=file,
            line=line,
            field=column,
            fix="use {id} for text ids, {id:06d} for numbers, or file_column= a column with file names",
        ) from None


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            header = next(csv.reader(f, delimiter=delimiter), None)
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 (byte {e.start})", file=str(path), fix="save the CSV as UTF-8") from None
    if not header:
        raise DataError(
            "empty file (no header row)", file=str(path), line=1, fix="the first row names the columns, e.g. id,count"
        )
    return [h.strip() for h in header]


def _rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, values) for every non-empty data row (the header skipped)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            next(reader)
            for values in reader:
                if any(v.strip() for v in values):
                    yield reader.line_num, values
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 (byte {e.start})", file=str(path), fix="save the CSV as UTF-8") from None
        except csv.Error as e:
            raise DataError(f"not valid CSV ({e})", file=str(path), line=reader.line_num) from None
