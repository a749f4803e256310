"""What every reader shares: a stream of raw records with the jsonl reader's skip / count / rejects-file
behaviour (`RecordReader`), a JSON-list-or-JSONL record stream (`json_records`), streaming of parts of a
large JSON file (`stream_json`), and image checks done once per file (`check_image_once`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from vlmtune.data.example import Example, _check_image
from vlmtune.data.formats.jsonl import JsonlReader
from vlmtune.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One source record of a non-JSONL format: where it is, its raw text, and how to build its Example.

    name: how messages and the rejects file name it ("line 12", "dialog 3 (image_id 42) round 2").
    raw: the record's source text, written to the rejects file when it is skipped.
    build: returns the Example or raises DataError (naming file, record, field and fix).
    """
    name: str
    raw: str
    build: Callable[[], Example]
    line: int | None = None


class RecordReader(JsonlReader):
    """JsonlReader's behaviour for any record stream: iterate for Examples; `rejected`, `rejects`, `rejects_path`.

    Strict by default (the first bad record raises). With skip_invalid, a record whose build raises
    DataError is skipped and kept as {"line", "record", "error", "raw"}; once iteration has finished the
    rejects go to `<path>.rejects.jsonl` (a stale one is removed when nothing was skipped). A DataError
    raised by the record stream itself (the file cannot be read at all) is always raised.
    Duplicate ids are errors (rejects with skip_invalid), as in JSONL.
    """

    def __init__(self, path: str | os.PathLike, records: Iterable[Record], *, skip_invalid: bool = False):
        # JsonlReader.__init__ opens a JSONL file; here the records come from the format's own parser.
        self.path = Path(path)
        self.skip_invalid = skip_invalid
        self.rejects: list[dict[str, Any]] = []
        self.rejects_path: Path | None = None
        self._it = self._run(iter(records))

    def _run(self, records: Iterator[Record]) -> Iterator[Example]:
        seen: set[str] = set()
        for rec in records:
            try:
                ex = rec.build()
                if ex.id in seen:
                    raise DataError(f"{rec.name}: duplicate id '{ex.id}'", file=str(self.path), line=rec.line,
                                    field="id", fix="ids must be unique within a dataset")
            except DataError as e:
                if not self.skip_invalid:
                    raise
                self.rejects.append({"line": rec.line, "record": rec.name, "error": str(e), "raw": rec.raw})
                continue
            seen.add(ex.id)
            yield ex
        if self.skip_invalid:
            self._write_rejects()


def check_image_once(path: Path, cache: dict[str, DataError | None], *, file: str | None, line: int | None,
                     field: str) -> None:
    """`example._check_image` (exists + decodes), memoised per path: a dialog's 10 rounds share one image."""
    key = str(path)
    if key not in cache:
        try:
            _check_image(path, file, line, field)
            cache[key] = None
        except DataError as e:
            cache[key] = e
            raise
    err = cache[key]
    if err is not None:
        raise err.with_traceback(None)


def json_records(path: Path, build: Any, *, what: str) -> Iterator[Record]:
    """Records of a JSON-list or JSONL file: `build(obj, line, name, index)` is called lazily for each.

    index: the record's position (0-based) among the file's records (blank JSONL lines not counted).

    A file whose first non-blank character is "[" is one JSON list (streamed element by element with ijson;
    a syntax error raises, naming its line, after the records before it);
    anything else is JSONL, read line by line (a line that is not JSON is a bad record, skippable).
    """
    if not path.exists():
        raise DataError("file not found", file=str(path), fix=f"check the path to {what}")
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        for j, obj in enumerate(stream_json(path, "item", what=what)):
            rid = obj.get("id") if isinstance(obj, dict) else None
            name = f"record {j}" + (f" (id {rid})" if rid is not None else "")
            yield Record(name=name, raw=json.dumps(obj, ensure_ascii=False, default=str),
                         build=lambda obj=obj, name=name, j=j: build(obj, None, name, j))
        return
    index = 0
    with open(path, "rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            raw = raw_bytes.decode("utf-8", errors="replace").rstrip("\r\n")
            if lineno == 1:
                raw = raw.lstrip("\ufeff")
            if not raw.strip():
                continue
            yield Record(name=f"line {lineno}", raw=raw, line=lineno,
                         build=lambda raw=raw, raw_bytes=raw_bytes, lineno=lineno, index=index: build(
                             _parse_line(raw, raw_bytes, path, lineno, what), lineno, f"line {lineno}", index))
            index += 1


def load_json(path: Path, what: str) -> Any:
    """The whole file parsed with `json`; a syntax or encoding error names the file, line and column."""
    if not path.exists():
        raise DataError("file not found", file=str(path), fix=f"check the path to {what}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", file=str(path),
                        line=e.lineno, fix=f"the file must be {what}; repair or re-create it") from None
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start})", file=str(path), fix="save the file as UTF-8") from None


def stream_json(path: Path, prefix: str, *, what: str, on_error: Callable[[], Exception] | None = None) -> Iterator[Any]:
    """The values at ijson `prefix` ("item": each element of a top-level list), parsed one at a time.

    A syntax or encoding error (possibly after some values were yielded) raises what `on_error()` returns;
    by default the file is parsed once more with `json` (`load_json`), which names the line and column."""
    import ijson

    def default_error() -> Exception:
        load_json(path, what)  # raises the exact error
        return DataError("the streaming JSON parser (ijson) rejected the file, but json accepts it", file=str(path),
                         fix="report this; meanwhile convert the file to JSONL (one record per line)")

    with open(path, "rb") as f:
        if f.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark, as json's utf-8-sig allows
            f.seek(0)
        try:
            yield from ijson.items(f, prefix, use_float=True)
        except (ijson.JSONError, UnicodeDecodeError, ValueError):
            raise (on_error or default_error)() from None


def _parse_line(raw: str, raw_bytes: bytes, path: Path, lineno: int, what: str) -> Any:
    try:
        raw_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start})", file=str(path), line=lineno,
                        fix="save the file as UTF-8") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        if lineno == 1 and raw.lstrip().startswith("{") and not raw.rstrip().endswith("}"):
            fix = f"the file must be {what}: a JSON list [...] or one complete JSON object per line"
        else:
            fix = "each line must be one complete JSON object"
        raise DataError(f"not valid JSON ({e.msg} at column {e.colno})", file=str(path), line=lineno, fix=fix) from None


