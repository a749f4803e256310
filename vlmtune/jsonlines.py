"""JSON lines, one line at a time: the one parser behind every JSONL file vlmtune reads (data files, the
JSONL variants of the other formats, evaluation predictions, predictions made elsewhere).

    for line in read_json_lines("data/train.jsonl"):               # strict: the first bad line raises
        use(line.value, line.number)
    for line in read_json_lines(path, lenient=True):                # lenient: a bad line comes back
        reject(line.number, line.text, line.error) if line.error else use(line.value)

Each line is read as bytes and decoded on its own, so one line that is not UTF-8 is one bad line, not a
crash of the file; a byte-order mark on line 1 (files saved by Windows editors) is accepted. Blank lines
are skipped (line numbers still count them). A bad line is a DataError naming the file and the line,
with a fix. The file is streamed: memory holds one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtune.errors import DataError

LINE_FIX = "each line must be one complete JSON object"
_BOM = b"\xef\xbb\xbf"


@dataclass
class JsonLine:
    """One non-blank line: its 1-based number, its text (undecodable bytes replaced, newline removed),
    and either its parsed value or the DataError that says why it is bad."""

    number: int
    text: str
    value: Any = None
    error: DataError | None = None


def read_json_lines(
    path: str | os.PathLike, *, lenient: bool = False, what: str = "a JSONL file", fix: str = LINE_FIX
) -> Iterator[JsonLine]:
    """Stream the non-blank lines of a JSON-lines file, parsed.

    lenient: yield a bad line with `.error` set instead of raising it.
    what: what the file should be, for messages ("check the path to {what}").
    fix: the fix a line that is not JSON gets (line 1 of a pretty-printed JSON file gets its own).
    A missing file raises (lenient or not) when iteration starts.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder, not a file", file=str(path), fix=f"give the path of {what} itself")
    if not path.is_file():
        raise DataError("file not found", file=str(path), fix=f"check the path to {what}")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = parse_line(raw, number, file=str(path), what=what, fix=fix)
            if line is None:
                continue
            if line.error is not None and not lenient:
                raise line.error
            yield line


def parse_line(
    raw: bytes, number: int, *, file: str, what: str = "a JSONL file", fix: str = LINE_FIX
) -> JsonLine | None:
    """One line's bytes -> a JsonLine (value or error), or None for a blank line."""
    if number == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        text, bad_utf8 = raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        text, bad_utf8 = raw.decode("utf-8", errors="replace"), e
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    if bad_utf8 is not None:
        return JsonLine(
            number,
            text,
            error=DataError(
                f"not valid UTF-8 ({bad_utf8.reason} at byte {bad_utf8.start})",
                file=file,
                line=number,
                fix="save the file as UTF-8",
            ),
        )
    try:
        return JsonLine(number, text, value=json.loads(text))
    except json.JSONDecodeError as e:
        if number == 1 and text.lstrip().startswith("{") and not text.rstrip().endswith("}"):
            # Line 1 opens an object it does not close: a pretty-printed JSON file given as JSON lines.
            fix = f"the file must be {what}: one complete JSON object per line (not one object over several lines)"
        return JsonLine(
            number,
            text,
            error=DataError(f"not valid JSON ({e.msg} at column {e.colno})", file=file, line=number, fix=fix),
        )


def starts_with_list(path: str | os.PathLike) -> bool:
    """Whether the file's first non-blank character is "[" (one JSON list, not JSON lines)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.removeprefix(_BOM).lstrip().startswith(b"[")
