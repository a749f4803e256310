"""The record converter shared by the sharegpt, hf_disk and hf readers: a LLaMA-Factory sharegpt / OpenAI-messages
record (after the column and tag mapping of its `Layout`) -> an Example, with its images resolved or extracted.
The formats themselves are described in `vlmtune.data.formats.sharegpt`."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example, atomic_write_bytes, example_from_dict
from vlmtune.data.formats.records import check_image_once
from vlmtune.errors import ConfigError, DataError

FORMATTINGS = ("sharegpt", "openai")
DEFAULT_COLUMNS: dict[str, Any] = {
    "messages": {"sharegpt": "conversations", "openai": "messages"},
    "images": "images",
    "system": None,
}
DEFAULT_TAGS = {
    "sharegpt": {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "system_tag": "system",
        "observation_tag": "observation",
        "function_tag": "function_call",
    },
    "openai": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
        "observation_tag": "tool",
        "function_tag": "function",
    },
}
UNSUPPORTED_COLUMNS = ("videos", "audios", "tools", "chosen", "rejected", "kto_tag")
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass(frozen=True)
class Layout:
    """Where a record keeps its messages, images and system prompt, and how roles are spelled."""

    formatting: str
    messages: str
    images: str | None
    system: str | None
    tags: Mapping[str, str]

    @classmethod
    def make(
        cls, formatting: str | None, columns: Mapping[str, Any] | None, tags: Mapping[str, Any] | None, where: str
    ) -> Layout:
        formatting = formatting or "sharegpt"
        if formatting not in FORMATTINGS:
            raise ConfigError(
                f"{where}: formatting '{formatting}' is not supported; use one of "
                f"{', '.join(FORMATTINGS)} (alpaca-style data: convert it to messages first)"
            )
        columns = dict(columns or {})
        bad = [c for c in UNSUPPORTED_COLUMNS if columns.get(c)]
        if bad:
            raise ConfigError(f"{where}: columns {bad} are not supported (vlmtune reads messages, images, system)")
        unknown_tags = set(tags or {}) - set(DEFAULT_TAGS["sharegpt"])
        if unknown_tags:
            raise ConfigError(
                f"{where}: unknown tag key(s) {sorted(unknown_tags)}; known: {', '.join(DEFAULT_TAGS['sharegpt'])}"
            )
        return cls(
            formatting=formatting,
            messages=columns.get("messages") or DEFAULT_COLUMNS["messages"][formatting],
            images=columns.get("images", DEFAULT_COLUMNS["images"]),
            system=columns.get("system"),
            tags={**DEFAULT_TAGS[formatting], **{k: str(v) for k, v in (tags or {}).items()}},
        )


class Converter:
    """One record (dict) -> Example, following a Layout; called as build(record, line, name, index).

    row_options: take `options` from each record's "options" field (a list) when it has one.
    """

    row_options = False

    def __init__(
        self,
        layout: Layout,
        *,
        task: str,
        target_from: str,
        options: Sequence[Any] | None,
        media_dir: Path,
        image_placeholder: str,
        check_images: bool,
        id_prefix: str,
        file: str,
        extract_to: Path | None = None,
    ):
        if not isinstance(task, str) or not task:
            raise ConfigError("give the examples' task, e.g. task='count' (see `vlmtune ls`)")
        if not (target_from in ("auto", "answer", "parse") or target_from.startswith("column:")):
            raise ConfigError(f"target_from='{target_from}' is not supported; use auto, answer, parse or column:NAME")
        self.layout, self.task, self.options = layout, task, list(options) if options is not None else None
        self.media_dir, self.placeholder, self.check_images = media_dir, image_placeholder, check_images
        self.id_prefix, self.file, self.extract_to = id_prefix, file, extract_to
        self.mode = target_from
        self._parser: Any = None
        if target_from in ("auto", "parse"):
            from vlmtune.registry import TASKS

            if task in TASKS:
                self._parser = TASKS.get(task)()
                self.mode = "parse"
            elif target_from == "parse":
                TASKS.get(task)  # ConfigError with did-you-mean
            else:
                self.mode = "answer"
        self._checked: dict[str, DataError | None] = {}

    def __call__(self, rec: Any, line: int | None, name: str, index: int) -> Example:
        lay, tags = self.layout, self.layout.tags

        def fail(msg: str, field: str | None, fix: str | None = None) -> DataError:
            return DataError(f"{name}: {msg}", file=self.file, line=line, field=field, fix=fix)

        if not isinstance(rec, Mapping):
            raise fail(f"expected an object, got {type(rec).__name__}", None)
        raw_msgs = rec.get(lay.messages)
        if not isinstance(raw_msgs, list) or not raw_msgs:
            raise fail(
                "missing or not a non-empty list",
                lay.messages,
                f"set columns.messages to the field holding the conversation (record fields: {', '.join(rec)})",
            )
        role_of = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}
        messages: list[dict[str, str]] = []
        part_images: list[Any] = []
        system = rec.get(lay.system) if lay.system else None
        if system:
            messages.append({"role": "system", "content": str(system)})
        for j, m in enumerate(raw_msgs):
            field = f"{lay.messages}[{j}]"
            if not isinstance(m, Mapping) or tags["role_tag"] not in m or tags["content_tag"] not in m:
                raise fail(
                    f"must be an object with '{tags['role_tag']}' and '{tags['content_tag']}'",
                    field,
                    "set tags.role_tag / tags.content_tag to the keys your messages use",
                )
            tag = m[tags["role_tag"]]
            if tag in (tags["observation_tag"], tags["function_tag"]) or tag not in role_of:
                raise fail(
                    f"role '{tag}' is not supported",
                    f"{field}.{tags['role_tag']}",
                    f"roles: {tags['user_tag']} (user), {tags['assistant_tag']} (assistant), "
                    f"{tags['system_tag']} (system, first only); set tags.user_tag / tags.assistant_tag",
                )
            role = role_of[tag]
            if role == "system" and (j > 0 or system):
                raise fail("a system message must come first (and only once)", f"{field}.{tags['role_tag']}")
            content = self._content(m[tags["content_tag"]], part_images, fail, f"{field}.{tags['content_tag']}")
            if self.placeholder != IMAGE_TOKEN:
                content = content.replace(self.placeholder, IMAGE_TOKEN)
            messages.append({"role": role, "content": content})
        turns = [m["role"] for m in messages if m["role"] != "system"]
        expected = ["user", "assistant"] * (len(turns) // 2 + 1)
        if turns != expected[: len(turns)] or not turns or turns[-1] != "assistant":
            raise fail(
                f"roles must alternate user, assistant, ... and end with the assistant's answer; got {turns}",
                lay.messages,
                "the last message is the answer the model learns; drop trailing user turns",
            )

        images = self._images(rec, part_images, fail)
        n_tokens = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
        if n_tokens == 0 and images:
            # LLaMA-Factory puts the image token(s) in front of the first prompt message; so do we.
            k = next(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[k] = {"role": "user", "content": IMAGE_TOKEN * len(images) + "\n" + messages[k]["content"]}
        elif n_tokens != len(images):
            raise fail(
                f"{n_tokens} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)",
                lay.images or "images",
                f"use one {IMAGE_TOKEN} per image (or none: the images then go before the first user message)",
            )

        rid = rec.get("id")
        ex_id = (
            str(rid)
            if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid)
            else f"{self.id_prefix}-{index:06d}"
        )
        group = rec.get("group")
        obj = {
            "id": ex_id,
            "task": self.task,
            "images": images,
            "messages": messages,
            "target": None,
            "options": self._options(rec),
            "group": str(group) if group is not None else ex_id,
            "meta": {"source": Path(self.file).name, "index": index},
        }
        ex = example_from_dict(obj, file=self.file, line=line, check_images=False)
        ex.target = self._target(ex, rec, fail)
        return ex

    def _options(self, rec: Mapping[str, Any]) -> list[Any] | None:
        if self.row_options and isinstance(rec.get("options"), (list, tuple)):
            return list(rec["options"])
        return list(self.options) if self.options is not None else None

    def _content(self, content: Any, part_images: list[Any], fail: Callable[..., DataError], field: str) -> str:
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise fail(f"must be a string or a list of parts, got {type(content).__name__}", field)
        texts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in ("image_url", "image"):
                ref = part.get("image_url", part.get("image", part.get("url")))
                if isinstance(ref, Mapping):
                    ref = ref.get("url", ref.get("path"))
                if not isinstance(ref, str) or not ref:
                    raise fail("an image part needs a url or path", f"{field}[{k}]")
                if ref.startswith("data:") or "://" in ref and not ref.startswith("file://"):
                    raise fail(
                        f"image {ref[:40]!r}... is not a local file",
                        f"{field}[{k}]",
                        "save the image to disk and give its path",
                    )
                part_images.append(ref.removeprefix("file://"))
                texts.append(IMAGE_TOKEN)
            else:
                raise fail(f"part {k} has type {kind!r}; supported: text, image_url, image", f"{field}[{k}]")
        return "\n".join(texts)

    def _images(self, rec: Mapping[str, Any], part_images: list[Any], fail: Callable[..., DataError]) -> list[str]:
        lay = self.layout
        col = rec.get(lay.images) if lay.images else None
        items = [] if col is None else [col] if isinstance(col, (str, Mapping)) else list(col)
        if items and part_images:
            raise fail(
                "images come both from message parts and from the images column", lay.images, "give each image once"
            )
        out = []
        for j, item in enumerate(items or part_images):
            field = f"{lay.images}[{j}]" if items else "images"
            out.append(self._resolve(item, fail, field))
        return out

    def _resolve(self, item: Any, fail: Callable[..., DataError], field: str) -> str:
        ref, data = (item.get("path"), item.get("bytes")) if isinstance(item, Mapping) else (item, None)
        if ref is not None and not isinstance(ref, str):
            raise fail(f"an image must be a path (or a datasets Image value), got {type(ref).__name__}", field)
        p = None
        if ref:
            p = Path(ref) if Path(ref).is_absolute() else self.media_dir / ref
            if not p.is_file():
                p = None if data else p
        if p is None and data:
            if self.extract_to is None:
                raise fail(
                    "the image is stored as bytes only",
                    field,
                    "pass extract_images_to=DIR (the images are written there once)",
                )
            p = _extract(data, self.extract_to)
        if p is None:
            raise fail("no image path", field)
        if not p.is_file():
            raise fail(
                f"image not found: {p}",
                field,
                f"image paths are resolved against media_dir ({self.media_dir}); set media_dir or fix the path",
            )
        if self.check_images:
            check_image_once(p, self._checked, file=self.file, line=None, field=field)
        return str(p.resolve())

    def _target(self, ex: Example, rec: Mapping[str, Any], fail: Callable[..., DataError]) -> Any:
        answer = (ex.answer_text() or "").strip()
        if self.mode.startswith("column:"):
            col = self.mode.split(":", 1)[1]
            if col not in rec:
                raise fail("missing", col, f"target_from='column:{col}' reads the target from that field")
            return rec[col]
        if self.mode == "answer":
            return answer
        parsed = self._parser.parse(answer, ex)
        if not parsed.ok:
            raise fail(
                f"the answer {answer[:80]!r} cannot be read as a '{self.task}' target",
                self.layout.messages,
                "fix the answer, give options (classify/mcq), or use target_from='answer' / 'column:NAME'",
            )
        return parsed.value


def _undecoded(feature: Any) -> Any:
    """A copy of a features tree with every datasets.Image set to decode=False (rows then hold path/bytes)."""
    import copy

    import datasets

    feature = copy.deepcopy(feature)

    def walk(f: Any) -> None:
        if isinstance(f, datasets.Image):
            f.decode = False
        elif isinstance(f, dict):
            for v in f.values():
                walk(v)
        elif isinstance(f, (list, tuple)):
            for v in f:
                walk(v)
        elif hasattr(f, "feature"):  # List / Sequence / LargeList
            walk(f.feature)

    walk(feature)
    return feature


def _extract(data: bytes, out_dir: Path) -> Path:
    """Write image bytes once, named by their hash, with the extension of their format."""
    from PIL import Image

    digest = hashlib.sha1(data).hexdigest()[:16]
    try:
        with Image.open(io.BytesIO(data)) as im:
            ext = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}.get(
                im.format or "", ".img"
            )
    except Exception:  # undecodable bytes: written anyway, so the decode check names the file
        ext = ".img"
    p = out_dir / f"{digest}{ext}"
    if not p.exists():
        atomic_write_bytes(p, data)
    return p


def _jsonable(obj: Any) -> Any:
    """A row for the rejects file: bytes replaced by their length."""
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, Mapping):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
