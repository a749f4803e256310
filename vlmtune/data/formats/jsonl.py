"""The native format: one canonical Example per JSONL line (see vlmtune/data/example.py).

    reader = read_jsonl("data/train.jsonl", skip_invalid=True)
    examples = list(reader)
    print(reader.rejected, reader.rejects_path)   # e.g. 3 data/train.jsonl.rejects.jsonl

Strict by default: the first bad record raises a DataError naming file, line, field and fix. With
`skip_invalid=True` bad records are skipped and counted instead, and written (line, error, raw text) to
`<path>.rejects.jsonl` once the file has been read to the end, so nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from vlmtune.data.example import Example, atomic_write_text, example_from_dict, iter_jsonl
from vlmtune.errors import DataError
from vlmtune.registry import FORMATS

log = logging.getLogger(__name__)


def rejects_path_for(path: str | os.PathLike) -> Path:
    """Where skipped records of `path` are written: `<path>.rejects.jsonl`."""
    path = Path(path)
    return path.with_name(path.name + ".rejects.jsonl")


class JsonlReader:
    """An iterator of Examples that also reports what it skipped.

    `rejected` counts skipped records so far; it is final (and the rejects file written) once iteration
    has finished. `rejects` holds the rejected rows themselves: {"line", "error", "raw"}.
    """

    def __init__(self, path: str | os.PathLike, *, skip_invalid: bool = False, check_images: bool = True,
                 known_tasks: Iterable[str] | None = None):
        self.path = Path(path)
        self.skip_invalid = skip_invalid
        self.rejects: list[dict[str, Any]] = []
        self.rejects_path: Path | None = None  # set when a rejects file has been written
        tasks = list(known_tasks) if known_tasks is not None else None
        if skip_invalid:
            self._it = self._lenient(check_images, tasks)
        else:
            self._it = iter_jsonl(self.path, check_images=check_images, known_tasks=tasks)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        return next(self._it)

    def _lenient(self, check_images: bool, tasks: list[str] | None) -> Iterator[Example]:
        # Same checks as iter_jsonl, but one record at a time so a bad one can be set aside.
        path = self.path
        if not path.exists():
            raise DataError("file not found", file=str(path),
                            fix="check the path (data files are JSONL, one record per line)")
        seen: set[str] = set()
        # Bytes, decoded per line: one non-UTF-8 line is then a rejected record, not a crash of the file.
        with open(path, "rb") as f:
            for lineno, raw_bytes in enumerate(f, start=1):
                try:
                    raw, bad_utf8 = raw_bytes.decode("utf-8"), None
                except UnicodeDecodeError as e:
                    raw, bad_utf8 = raw_bytes.decode("utf-8", errors="replace"), e
                raw = raw.rstrip("\r\n")
                if lineno == 1:
                    raw = raw.lstrip("\ufeff")  # a BOM from Windows editors is not a bad record
                if not raw.strip():
                    continue
                try:
                    if bad_utf8 is not None:
                        raise DataError(f"not valid UTF-8 ({bad_utf8.reason} at byte {bad_utf8.start})",
                                        file=str(path), line=lineno, fix="save the file as UTF-8")
                    try:
                        obj = json.loads(raw)
                    except json.JSONDecodeError as e:
                        raise DataError(f"not valid JSON ({e.msg} at column {e.colno})", file=str(path),
                                        line=lineno, fix="each line must be one complete JSON object") from None
                    ex = example_from_dict(obj, base_dir=path.parent, file=str(path), line=lineno,
                                           check_images=check_images, known_tasks=tasks)
                    if ex.id in seen:
                        raise DataError(f"duplicate id '{ex.id}'", file=str(path), line=lineno, field="id",
                                        fix="ids must be unique within a file")
                except DataError as e:
                    self.rejects.append({"line": lineno, "error": str(e), "raw": raw})
                    continue
                seen.add(ex.id)
                yield ex
        self._write_rejects()

    def _write_rejects(self) -> None:
        target = rejects_path_for(self.path)
        if not self.rejects:
            # A rejects file left from an earlier run would describe data that is no longer skipped.
            target.unlink(missing_ok=True)
            return
        atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rejects))
        self.rejects_path = target
        log.warning("%s: skipped %d invalid record(s); see %s", self.path, self.rejected, target)


@FORMATS.register("jsonl", help="canonical Example records, one JSON object per line")
def read_jsonl(path: str | os.PathLike, *, skip_invalid: bool = False, check_images: bool = True,
               known_tasks: Iterable[str] | None = None) -> JsonlReader:
    """Stream Examples from a JSONL file. With skip_invalid, bad records go to `<path>.rejects.jsonl`.

    Returns a JsonlReader: iterate it for Examples; afterwards `.rejected` is how many were skipped.
    """
    return JsonlReader(path, skip_invalid=skip_invalid, check_images=check_images, known_tasks=known_tasks)
