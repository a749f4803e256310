"""What the format readers share besides the reader classes (`Record`, `RecordReader` in
vlmtune/data/example.py): a JSON-list-or-JSONL record stream (`json_records`), streaming of parts of a
large JSON file (`stream_json`), and image checks done once per file (`check_image_once`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vlmtune.data.example import Record, _check_image
from vlmtune.errors import DataError
from vlmtune.jsonlines import JsonLine, read_json_lines, starts_with_list


def check_image_once(
    path: Path, cache: dict[str, DataError | None], *, file: str | None, line: int | None, field: str
) -> None:
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
    if not path.is_file():
        raise DataError("file not found", file=str(path), fix=f"check the path to {what}")
    if starts_with_list(path):
        for j, obj in enumerate(stream_json(path, "item", what=what)):
            rid = obj.get("id") if isinstance(obj, dict) else None
            name = f"record {j}" + (f" (id {rid})" if rid is not None else "")
            yield Record(
                name=name,
                raw=json.dumps(obj, ensure_ascii=False, default=str),
                build=functools.partial(build, obj, None, name, j),
            )
        return

    def build_line(line: JsonLine, index: int) -> Any:
        if line.error is not None:
            raise line.error
        return build(line.value, line.number, f"line {line.number}", index)

    for index, line in enumerate(read_json_lines(path, lenient=True, what=what)):
        yield Record(
            name=f"line {line.number}",
            raw=line.text,
            line=line.number,
            build=functools.partial(build_line, line, index),
        )


def load_json(path: Path, what: str) -> Any:
    """The whole file parsed with `json`; a syntax or encoding error names the file, line and column."""
    if not path.exists():
        raise DataError("file not found", file=str(path), fix=f"check the path to {what}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
            file=str(path),
            line=e.lineno,
            fix=f"the file must be {what}; repair or re-create it",
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start})", file=str(path), fix="save the file as UTF-8") from None


def stream_json(
    path: Path, prefix: str, *, what: str, on_error: Callable[[], Exception] | None = None
) -> Iterator[Any]:
    """The values at ijson `prefix` ("item": each element of a top-level list), parsed one at a time.

    A syntax or encoding error (possibly after some values were yielded) raises what `on_error()` returns;
    by default the file is parsed once more with `json` (`load_json`), which names the line and column."""
    import ijson

    def default_error() -> Exception:
        load_json(path, what)  # raises the exact error
        return DataError(
            "the streaming JSON parser (ijson) rejected the file, but json accepts it",
            file=str(path),
            fix="report this; meanwhile convert the file to JSONL (one record per line)",
        )

    with open(path, "rb") as f:
        if f.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark, as json's utf-8-sig allows
            f.seek(0)
        try:
            yield from ijson.items(f, prefix, use_float=True)
        except (ijson.JSONError, UnicodeDecodeError, ValueError):
            raise (on_error or default_error)() from None
