"""A real HTTP server on a loopback port that speaks OpenAI's chat-completions protocol, with scripted faults.

    with FakeOpenAI(responder=lambda body: ("<reminder>...</reminder>\\nyes", "stop"), latency=0.2) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x")

`script(body, attempt)` (attempt = how many times this body was seen before, from 0) may return a fault:
"429" (with Retry-After: `retry_after` s), "500", "hang" (no answer for `hang_s`), "malformed" (a 200 whose body
is not JSON), or None for a normal answer. `responder(body)` gives (text, finish_reason). Every request is
logged in `log` as {"body_key", "status", "t"}; `body_key` hashes the messages, model and parameters.
Used by tests/test_remote.py, tests/test_teacher.py and benchmarks/teach.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def prompt_chars(body: dict[str, Any]) -> int:
    n = 0
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            n += len(c)
        else:
            n += sum(len(p.get("text", "")) for p in c if p.get("type") == "text")
    return n


def echo_responder(body: dict[str, Any]) -> tuple[str, str]:
    return f"answer {body_key(body)[:8]}", "stop"


def recall_responder(body: dict[str, Any]) -> tuple[str, str]:
    """A teacher that recalls the conversation in the last message (no gold answers: it always says "yes")."""
    user = body["messages"][-1]["content"]
    text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user if p.get("type") == "text")
    lines = text.split("conversation:", 1)[-1].strip().splitlines()
    answers = "; ".join(ln[3:] for ln in lines if ln.startswith("A: "))
    question = lines[-1][3:] if lines and lines[-1].startswith("Q: ") else ""
    return f"<reminder>Earlier answers: {answers or 'none'}. Now the question is: {question}</reminder>\nyes", "stop"


class FakeOpenAI:
    def __init__(
        self,
        responder: Callable[[dict], tuple[str, str]] = echo_responder,
        script: Callable[[dict, int], str | None] | None = None,
        *,
        latency: float = 0.0,
        retry_after: float = 0.2,
        hang_s: float = 5.0,
        prompt_tokens_cap: int | None = None,
        usage_tokens: tuple[int, int] | None = None,
    ):
        self.responder, self.script, self.latency = responder, script, latency
        self.retry_after, self.hang_s, self.cap, self.usage_tokens = (
            retry_after,
            hang_s,
            prompt_tokens_cap,
            usage_tokens,
        )
        self.log: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fake.handle(self, body)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def handle(self, h: Any, body: dict[str, Any]) -> None:
        key = body_key(body)
        with self.lock:
            attempt = self.seen.get(key, 0)
            self.seen[key] = attempt + 1
        fault = self.script(body, attempt) if self.script else None
        entry = {"body_key": key, "t": time.monotonic(), "status": 200, "fault": fault}
        with self.lock:
            self.log.append(entry)
        if self.latency:
            time.sleep(self.latency)
        if fault == "429":
            entry["status"] = 429
            h._send(
                429,
                b'{"error": {"message": "slow down", "type": "rate_limit"}}',
                {"Retry-After": str(self.retry_after)},
            )
        elif fault == "500":
            entry["status"] = 500
            h._send(500, b'{"error": {"message": "boom", "type": "server_error"}}')
        elif fault == "hang":
            entry["status"] = "hang"
            time.sleep(self.hang_s)
            h._send(500, b'{"error": {"message": "late"}}')
        elif fault == "malformed":
            entry["status"] = "malformed"
            h._send(200, b'{"id": "x", "choices": [{"message": {"content": "trunc')
        else:
            text, finish = self.responder(body)
            pt = prompt_chars(body) // 4 + 1
            if self.cap is not None:
                pt = min(pt, self.cap)
            ct = max(1, len(text) // 4)
            if self.usage_tokens is not None:
                pt, ct = self.usage_tokens
            payload = {
                "id": "chatcmpl-" + key[:12],
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            }
            h._send(200, json.dumps(payload).encode())

    def ok_counts(self) -> dict[str, int]:
        """body_key -> how many times it was answered with a 200 and a normal body."""
        out: dict[str, int] = {}
        for e in self.log:
            if e["status"] == 200:
                out[e["body_key"]] = out.get(e["body_key"], 0) + 1
        return out

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # a server in its own process (benchmarks/teach.py): prints its URL, serves until killed
    import sys

    srv = FakeOpenAI(recall_responder, latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0)
    with srv:
        print(srv.url, flush=True)
        threading.Event().wait()
