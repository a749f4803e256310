"""The canonical Example record (one JSON object per JSONL line) and its validation.

    {"id": "count-000001", "task": "count", "images": ["images/000001.png"],
     "messages": [{"role": "user", "content": "<image>\\nHow many red shapes are there?"},
                  {"role": "assistant", "content": "3"}],
     "target": 3, "options": null, "group": "scene-000001", "meta": {}}

`images` are resolved relative to the JSONL file. Each user message holds one `<image>` placeholder
per image, in order; the placeholders across all messages must match `len(images)`.
`target` is the gold answer in structured form; the last assistant message is its rendering for
training, and is never shown to the model at evaluation time.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from vlmtune.errors import DataError

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


def _fail(msg: str, file: str | None, line: int | None, fieldname: str | None, fix: str | None = None):
    raise DataError(msg, file=file, line=line, field=fieldname, fix=fix)


def example_from_dict(obj: Any, *, base_dir: Path | None = None, file: str | None = None,
                      line: int | None = None, check_images: bool = True,
                      known_tasks: Iterable[str] | None = None) -> Example:
    """Validate one record and build an Example; image paths become absolute (resolved against base_dir)."""
    if not isinstance(obj, dict):
        _fail(f"expected a JSON object, got {type(obj).__name__}", file, line, None,
              "each line must be one JSON object with 'id', 'task', 'messages'")
    for key in REQUIRED:
        if key not in obj:
            _fail("missing", file, line, key, f"add '{key}' to the record (required: {', '.join(REQUIRED)})")
    unknown = set(obj) - {"id", "task", "images", "messages", "target", "options", "group", "meta"}
    if unknown:
        _fail(f"unknown field(s) {sorted(unknown)}", file, line, sorted(unknown)[0],
              "put extra information under 'meta'")
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
            _fail(f"message {i} has role '{m['role']}'", file, line, f"messages[{i}].role",
                  f"use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            _fail(f"message {i} content must be a string", file, line, f"messages[{i}].content")
        n_placeholders += m["content"].count(IMAGE_TOKEN)
        if m["role"] == "assistant" and IMAGE_TOKEN in m["content"]:
            _fail(f"message {i} is an assistant message with an {IMAGE_TOKEN} placeholder", file, line,
                  f"messages[{i}].content", "images belong in user messages")
    if msgs[0]["role"] == "assistant":
        _fail("the first message is from the assistant", file, line, "messages[0].role",
              "start with a user (or system) message")
    images = obj.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        _fail("must be a list of image paths", file, line, "images")
    if n_placeholders != len(images):
        _fail(f"{n_placeholders} {IMAGE_TOKEN} placeholder(s) in the messages but {len(images)} image(s)",
              file, line, "images", f"put exactly one {IMAGE_TOKEN} in a user message per image, in order")
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
    return Example(id=str(obj["id"]), task=task, messages=[dict(m) for m in msgs], images=resolved,
                   target=obj.get("target"), options=options,
                   group=None if group is None else str(group), meta=meta)


def _check_image(path: Path, file: str | None, line: int | None, fieldname: str) -> None:
    if not path.exists():
        _fail(f"image not found: {path}", file, line, fieldname,
              "image paths are resolved relative to the JSONL file; check the path or copy the image there")
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for corrupt files
        _fail(f"image cannot be decoded ({type(e).__name__}: {e}): {path}", file, line, fieldname,
              "re-export the image as PNG/JPEG or remove the record")


def iter_jsonl(path: str | os.PathLike, *, check_images: bool = True,
               known_tasks: Iterable[str] | None = None) -> Iterator[Example]:
    """Stream Examples from a JSONL file; the first bad record raises a DataError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path), fix="check the path (data files are JSONL, one record per line)")
    tasks = list(known_tasks) if known_tasks is not None else None
    seen: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            try:
                # utf-8-sig on line 1 accepts a byte-order mark (files saved by Windows editors).
                raw = raw_bytes.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8 (byte {e.start})", file=str(path), line=lineno,
                                fix="re-save the file as UTF-8") from None
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e.msg} at column {e.colno})", file=str(path), line=lineno,
                                fix="each line must be one complete JSON object") from None
            ex = example_from_dict(obj, base_dir=path.parent, file=str(path), line=lineno,
                                   check_images=check_images, known_tasks=tasks)
            if ex.id in seen:
                raise DataError(f"duplicate id '{ex.id}'", file=str(path), line=lineno, field="id",
                                fix="ids must be unique within a file")
            seen.add(ex.id)
            yield ex


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
