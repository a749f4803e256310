"""Chat requests and responses of the OpenAI-compatible client, their cache keys, and the append-only JSONL response
cache (`vlmtune.infer.remote` sends; the teacher's backends share the cache)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN
from vlmtune.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to ask: vlmtune messages (`<image>` placeholders), image paths, parameters, a tag."""

    messages: tuple[dict[str, str], ...] | list[dict[str, str]]
    images: tuple[str, ...] | list[str] = ()
    params: dict[str, Any] = field(default_factory=dict)
    tag: str = ""


@dataclass
class ChatResponse:
    """What came back for one request key (or why nothing did: `error`)."""

    key: str
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None  # the model the server says answered
    error: str | None = None  # the last error when every attempt failed
    attempts: int = 0
    seconds: float = 0.0
    input_truncated: bool = False
    system_fingerprint: str | None = None  # the server's configuration tag, when it sends one (OpenAI does)
    prompt_logprobs: list[list[float] | None] | None = None  # [token id, log-prob] per prompt token (vLLM's)
    cached: bool = False  # read from the cache in this run (not written to the file)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("cached")
        return json.dumps({"v": CACHE_VERSION, **d}, ensure_ascii=False, sort_keys=True)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}", fix="check the image paths of the data file") from None
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(model: str, req: ChatRequest, image_hash: Callable[[str], str] = file_sha256) -> str:
    """SHA-256 of the canonical JSON of (model, messages with images by content hash, params, tag)."""
    n = sum(m["content"].count(IMAGE_TOKEN) for m in req.messages)
    if n != len(req.images):
        raise DataError(
            f"a request has {n} {IMAGE_TOKEN} placeholder(s) but {len(req.images)} image(s)",
            field="images",
            fix=f"put one {IMAGE_TOKEN} in a message per image, in order",
        )
    body = {
        "model": model,
        "messages": [dict(m) for m in req.messages],
        "images": [image_hash(p) for p in req.images],
        "params": dict(req.params),
        "tag": req.tag,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


class ResponseCache:
    """An append-only JSONL file of ChatResponses; the last line per key wins (a success after a failure)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.entries: dict[str, ChatResponse] = {}
        self.dropped_partial = False
        self._fd: int | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        lines = data.split(b"\n")
        for i, raw in enumerate(lines, start=1):
            last = i == len(lines)
            if not raw.strip():
                if not last:
                    good_end += len(raw) + 1
                continue
            try:
                if last:  # no newline after it: the write was cut short
                    raise ValueError("no newline")
                obj = json.loads(raw.decode("utf-8"))
                resp = ChatResponse(**{k: v for k, v in obj.items() if k != "v"})
            except (ValueError, TypeError, UnicodeDecodeError) as e:
                if last:
                    self.dropped_partial = True
                    log.warning(
                        f"[remote] {self.path}: dropped a truncated last line ({len(raw)} bytes; an "
                        f"interrupted write); its request will be asked again"
                    )
                    break
                raise DataError(
                    f"not a cache record ({e})",
                    file=str(self.path),
                    line=i,
                    fix="delete the line (its request is then asked again) or the whole file",
                ) from None
            self.entries[resp.key] = resp
            good_end += len(raw) + 1
        if self.dropped_partial:
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def get(self, key: str) -> ChatResponse | None:
        r = self.entries.get(key)
        return r if r is not None and r.ok else None

    def append(self, resp: ChatResponse) -> None:
        """Append one line with a single write() on an O_APPEND descriptor. Once write() returns, the line is the
        kernel's: a kill -9 of this process cannot lose it (a power cut can; no fsync per line), and a kill during
        the write leaves at most a partial last line, which the next load drops."""
        line = (resp.to_json() + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line)
            self.entries[resp.key] = resp

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
