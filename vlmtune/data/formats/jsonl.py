"""The native format: one canonical Example per JSONL line (see vlmtune/data/example.py).

    reader = read_jsonl("data/train.jsonl", skip_invalid=True)
    examples = list(reader)
    print(reader.rejected, reader.rejects_path)   # e.g. 3 data/train.jsonl.rejects.jsonl

Strict by default: the first bad record raises a DataError naming file, line, field and fix. With
`skip_invalid=True` bad records are skipped and counted instead, and written (line, error, raw text) to
`<path>.rejects.jsonl` once the file has been read to the end, so nothing is dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from vlmtune.data.example import JsonlReader
from vlmtune.registry import FORMATS


@FORMATS.register("jsonl", help="canonical Example records, one JSON object per line")
def read_jsonl(
    path: str | os.PathLike,
    *,
    skip_invalid: bool = False,
    check_images: bool = True,
    known_tasks: Iterable[str] | None = None,
) -> JsonlReader:
    """Stream Examples from a JSONL file. With skip_invalid, bad records go to `<path>.rejects.jsonl`.

    Returns a JsonlReader: iterate it for Examples; afterwards `.rejected` is how many were skipped.
    """
    return JsonlReader(path, skip_invalid=skip_invalid, check_images=check_images, known_tasks=known_tasks)
