"""The canonical Example record (one JSON object per JSONL line) and its validation.

    {"id": "count-000001", "task": "count", "images": ["images/000001.png"],
     "messages": [{"role": "user", "content": "<image>\\nHow many red shapes are there?"},
                  {"role": "assistant", "content": "3"}],
     "target": 3, "options": null, "group": "scene-000001", "meta": {}}

`images` are resolved relative to the JSONL file. Each user message holds one `<image>` placeholder
per image, in order; the placeholders across all messages must match `len(images)`.
`target` is the gold answer in structured form; the last assistant message is its rendering for
training, and is never shown to the model at evaluation time.

Readers: `RecordReader` turns any stream of source `Record`s into Examples with the skip / count /
rejects-file / duplicate-id behaviour every format shares; `JsonlReader` is the one for canonical JSONL
files (lines parsed by `vlmtune.jsonlines`), and `iter_jsonl` / `load_jsonl` its strict use.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.errors import DataError
from vlmtune.jsonlines import JsonLine, read_json_lines

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")
REQUIRED = ("id", "task", "messages")


@dataclass
class Example:
    id: str
    task: str
    messages: list[dict[str, str]]
    images: list[str] = field(default_factory=list)
    target: Any = None
    options: list[Any] | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the final assistant answer: what the model sees at eval."""
        msgs = list(self.messages)
        while msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        return msgs

    def answer_text(self) -> str | None:
        """The final assistant message (the training target), if any."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages[-1]["content"]
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_written(self) -> Example:
        """The example as its data file wrote it, when a model-specific rewrite (a memory connector's prompt) keeps
        the original messages and images in meta.source_example; else the example itself. Input checks (a task's
        leak rules) run on this."""
        import dataclasses

        src = self.meta.get("source_example")
        return dataclasses.replace(self, messages=src["messages"], images=src["images"]) if src else self


def _fail(msg: str, file: str | None, line: int | None, fieldname: str | None, fix: str | None = None):
    raise DataError(msg, file=file, line=line, field=fieldname, fix=fix)


def example_from_dict(
    obj: Any,
    *,
    base_dir: Path | None = None,
    file: str | None = None,
    line: int | None = None,
    check_images: bool = True,
    known_tasks: Iterable[str] | None = None,
) -> Example:
    """Validate one record and build an Example; image paths become absolute (resolved against base_dir)."""
    if not isinstance(obj, dict):
        _fail(
            f"expected a JSON object, got {type(obj).__name__}",
            file,
            line,
            None,
            "each line must be one JSON object with 'id', 'task', 'messages'",
        )
    for key in REQUIRED:
        if key not in obj:
            _fail("missing", file, line, key, f"add '{key}' to the record (required: {', '.join(REQUIRED)})")
    unknown = set(obj) - {"id", "task", "images", "messages", "target", "options", "group", "meta"}
    if unknown:
        _fail(
            f"unknown field(s) {sorted(unknown)}", file, line, sorted(unknown)[0], "put extra information under 'meta'"
        )
    if not isinstance(obj["id"], (str, int)) or str(obj["id"]) == "":
        _fail("must be a non-empty string", file, line, "id")
    task = obj["task"]
    if not isinstance(task, str):
        _fail("must be a string", file, line, "task")
    known = list(known_tasks) if known_tasks is not None else None
    if known is not None and task not in known:
        import difflib

        close = difflib.get_close_matches(task, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        _fail(f"unknown task '{task}'", file, line, "task", f"{hint}available: {', '.join(sorted(known))}")
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        _fail("must be a non-empty list of {role, content}", file, line, "messages")
    n_placeholders = 0
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            _fail(f"message {i} must be an object with 'role' and 'content'", file, line, f"messages[{i}]")
        if m["role"] not in ROLES:
            _fail(
                f"message {i} has role '{m['role']}'",
                file,
                line,
                f"messages[{i}].role",
                f"use one of {', '.join(ROLES)}",
            )
        if not isinstance(m["content"], str):
            _fail(f"message {i} content must be a string", file, line, f"messages[{i}].content")
        n_placeholders += m["content"].count(IMAGE_TOKEN)
        if m["role"] == "assistant" and IMAGE_TOKEN in m["content"]:
            _fail(
                f"message {i} is an assistant message with an {IMAGE_TOKEN} placeholder",
                file,
                line,
                f"messages[{i}].content",
                "images belong in user messages",
            )
    if msgs[0]["role"] == "assistant":
        _fail(
            "the first message is from the assistant",
            file,
            line,
            "messages[0].role",
            "start with a user (or system) message",
        )
    images = obj.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        _fail("must be a list of image paths", file, line, "images")
    if n_placeholders != len(images):
        _fail(
            f"{n_placeholders} {IMAGE_TOKEN} placeholder(s) in the messages but {len(images)} image(s)",
            file,
            line,
            "images",
            f"put exactly one {IMAGE_TOKEN} in a user message per image, in order",
        )
    resolved = []
    for j, p in enumerate(images):
        path = Path(p)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if check_images:
            _check_image(path, file, line, f"images[{j}]")
        resolved.append(str(path))
    options = obj.get("options")
    if options is not None and not isinstance(options, list):
        _fail("must be a list or null", file, line, "options")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        _fail("must be an object", file, line, "meta")
    group = obj.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int))):
        _fail(
            f"must be a string, an int or null, got {type(group).__name__}",
            file,
            line,
            "group",
            "records sharing a group (e.g. one scene or patient) stay in one split; give its name",
        )
    return Example(
        id=str(obj["id"]),
        task=task,
        messages=[dict(m) for m in msgs],
        images=resolved,
        target=obj.get("target"),
        options=options,
        group=None if group is None else str(group),
        meta=meta,
    )


def _check_image(path: Path, file: str | None, line: int | None, fieldname: str) -> None:
    if not path.exists():
        _fail(
            f"image not found: {path}",
            file,
            line,
            fieldname,
            "image paths are resolved relative to the JSONL file; check the path or copy the image there",
        )
    if path.is_dir():
        _fail(f"image path is a folder: {path}", file, line, fieldname, "give the path of an image file")
    try:
        from PIL import Image

        # load() decodes every pixel: verify() alone passes a truncated JPEG, which would then fail in training.
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for corrupt files
        _fail(
            f"image cannot be decoded ({type(e).__name__}: {e}): {path}",
            file,
            line,
            fieldname,
            "re-export the image as PNG/JPEG or remove the record",
        )


def rejects_path_for(path: str | os.PathLike) -> Path:
    """Where skipped records of `path` are written: `<path>.rejects.jsonl`."""
    path = Path(path)
    return path.with_name(path.name + ".rejects.jsonl")


@dataclass
class Record:
    """One source record: where it is, its raw text, and how to build its Example.

    name: how messages and the rejects file name it ("line 12", "dialog 3 (image_id 42) round 2"); None
        for a line of a canonical JSONL file, which its line number names.
    raw: the record's source text, written to the rejects file when it is skipped.
    build: returns the Example or raises DataError (naming file, record, field and fix).
    """

    name: str | None
    raw: str
    build: Callable[[], Example]
    line: int | None = None


class RecordReader:
    """Examples from any record stream, with what every reader shares: iterate it for Examples; `rejected`
    counts skipped records, `rejects` holds them, `rejects_path` is where they were written.

    Strict by default (the first bad record raises). With skip_invalid, a record whose build raises
    DataError is skipped and kept as {"line", "record", "error", "raw"} ("record" only when the record has
    a name); once iteration has finished the rejects go to `<path>.rejects.jsonl` (a stale one is removed
    when nothing was skipped). A DataError raised by the record stream itself (the file cannot be read at
    all) is always raised. Duplicate ids are errors (rejects with skip_invalid).
    """

    unique_within = "a dataset"  # what ids must be unique within, for the duplicate-id fix

    def __init__(self, path: str | os.PathLike, records: Iterable[Record], *, skip_invalid: bool = False):
        self.path = Path(path)
        self.skip_invalid = skip_invalid
        self.rejects: list[dict[str, Any]] = []
        self.rejects_path: Path | None = None  # set when a rejects file has been written
        self._it = self._run(iter(records))

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        return next(self._it)

    def _run(self, records: Iterator[Record]) -> Iterator[Example]:
        seen: set[str] = set()
        for rec in records:
            try:
                ex = rec.build()
                if ex.id in seen:
                    prefix = f"{rec.name}: " if rec.name else ""
                    raise DataError(
                        f"{prefix}duplicate id '{ex.id}'",
                        file=str(self.path),
                        line=rec.line,
                        field="id",
                        fix=f"ids must be unique within {self.unique_within}",
                    )
            except DataError as e:
                if not self.skip_invalid:
                    raise
                row = {"line": rec.line} | ({"record": rec.name} if rec.name else {})
                self.rejects.append(row | {"error": str(e), "raw": rec.raw})
                continue
            seen.add(ex.id)
            yield ex
        if self.skip_invalid:
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


class JsonlReader(RecordReader):
    """Canonical Examples, one per line of a JSONL file (`vlmtune.jsonlines`), validated as they are read."""

    unique_within = "a file"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        skip_invalid: bool = False,
        check_images: bool = True,
        known_tasks: Iterable[str] | None = None,
    ):
        tasks = list(known_tasks) if known_tasks is not None else None
        super().__init__(path, self._records(Path(path), check_images, tasks), skip_invalid=skip_invalid)

    @staticmethod
    def _records(path: Path, check_images: bool, tasks: list[str] | None) -> Iterator[Record]:
        def build(line: JsonLine) -> Example:
            if line.error is not None:
                raise line.error
            return example_from_dict(
                line.value,
                base_dir=path.parent,
                file=str(path),
                line=line.number,
                check_images=check_images,
                known_tasks=tasks,
            )

        for line in read_json_lines(path, lenient=True, what="the data file (JSONL, one record per line)"):
            yield Record(name=None, raw=line.text, line=line.number, build=functools.partial(build, line))


def iter_jsonl(
    path: str | os.PathLike, *, check_images: bool = True, known_tasks: Iterable[str] | None = None
) -> Iterator[Example]:
    """Stream Examples from a JSONL file; the first bad record raises a DataError naming file and line."""
    return JsonlReader(path, check_images=check_images, known_tasks=known_tasks)


def load_jsonl(path: str | os.PathLike, **kw: Any) -> list[Example]:
    return list(iter_jsonl(path, **kw))


def write_jsonl(path: str | os.PathLike, examples: Iterable[Example]) -> Path:
    """Write Examples atomically, image paths relative to the file's directory (how they are read back)."""
    path = Path(path)
    base = path.parent.resolve()
    rows = []
    for ex in examples:
        d = ex.to_dict()
        d["images"] = [os.path.relpath(Path(p).resolve(), base) for p in ex.images]
        rows.append(json.dumps(d, ensure_ascii=False))
    atomic_write_text(path, "\n".join(rows) + ("\n" if rows else ""))
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that readers never see a half-written result (temp file + rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results should get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
