"""The OpenAI-compatible client against a real HTTP server on a loopback port (tests/fake_openai.py)."""

from __future__ import annotations

import base64
import json
import time

import pytest

pytest.importorskip("openai")

from tests.fake_openai import FakeOpenAI  # noqa: E402
from vlmtune.errors import ConfigError, DataError  # noqa: E402
from vlmtune.infer.remote import (
    ChatRequest,
    Pacer,
    RemoteClient,
    RemoteConfig,
    ResponseCache,  # noqa: E402
    request_key,
)


def req(i: int, **params) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"question {i}"}], params={"temperature": 0.0, **params})


def client(srv: FakeOpenAI, cache=None, **kw) -> RemoteClient:
    cfg = dict(base_url=srv.url, model="teacher", timeout=1.0, backoff=0.05, max_retries=3)
    cfg.update(kw)
    return RemoteClient(RemoteConfig(**cfg), cache)


def number(body: dict) -> int:
    return int(body["messages"][0]["content"].split()[-1])


def test_faults_are_retried_and_retry_after_is_honoured(tmp_path):
    faults = {0: "429", 1: "500", 2: "hang", 3: "malformed"}
    with FakeOpenAI(script=lambda b, n: faults.get(number(b)) if n == 0 else None, retry_after=0.6, hang_s=2.5) as srv:
        c = client(srv, tmp_path / "c.jsonl", concurrency=4)
        out = c.run([req(i) for i in range(6)])
    assert all(r.ok for r in out), [r.error for r in out]
    assert [r.attempts for r in out] == [2, 2, 2, 2, 1, 1]
    assert c.summary.retries == 4 and c.summary.sent == 6 and c.summary.failed == 0
    by_key = {}
    for e in srv.log:
        by_key.setdefault(e["body_key"], []).append(e)
    first_429 = next(e for e in srv.log if e["status"] == 429)
    retry = by_key[first_429["body_key"]][1]
    assert retry["t"] - first_429["t"] >= 0.6  # Retry-After: 0.6 s, not the 0.05 s backoff


def test_failures_are_recorded_then_retried_on_rerun(tmp_path):
    with FakeOpenAI(script=lambda b, n: "500" if number(b) == 1 and n < 4 else None) as srv:
        out = client(srv, tmp_path / "c.jsonl", max_retries=2).run([req(0), req(1)])
        assert out[0].ok and not out[1].ok and "HTTP 500" in out[1].error and out[1].attempts == 3
        c = client(srv, tmp_path / "c.jsonl", max_retries=2)
        again = c.run([req(0), req(1)])
    assert again[1].ok and not again[0].cached is False and again[0].cached
    assert c.summary.cached == 1 and c.summary.sent == 1
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["error"] and json.loads(lines[2])["error"] is None


def test_bad_request_is_not_retried_and_wrong_key_stops(tmp_path):
    with FakeOpenAI() as srv:
        c = client(srv)
        srv.handle = lambda h, body: h._send(400, b'{"error": {"message": "bad"}}')
        out = c.run([req(0)])
        assert not out[0].ok and out[0].attempts == 1 and "HTTP 400" in out[0].error
        srv.handle = lambda h, body: h._send(401, b'{"error": {"message": "no key"}}')
        with pytest.raises(ConfigError, match="API key"):
            client(srv).run([req(1)])


def test_duplicates_sent_once_and_a_cached_rerun_sends_nothing(tmp_path):
    reqs = [req(0), req(1), req(0), req(2), req(1)]
    with FakeOpenAI() as srv:
        out = client(srv, tmp_path / "c.jsonl").run(reqs)
        assert len(srv.log) == 3 and out[0].text == out[2].text
        c = client(srv, tmp_path / "c.jsonl")
        again = c.run(reqs)
    assert len(srv.log) == 3 and c.summary.sent == 0 and c.summary.cached == 3
    assert [r.text for r in again] == [r.text for r in out]


def test_length_finish_and_usage_are_recorded(tmp_path):
    with FakeOpenAI(responder=lambda b: ("<reminder>cut sho", "length")) as srv:
        c = client(srv)
        r = c.run([req(0, max_tokens=4)])[0]
    assert r.ok and r.finish_reason == "length" and r.completion_tokens >= 1 and r.prompt_tokens >= 1
    assert c.summary.prompt_tokens == r.prompt_tokens and c.summary.completion_tokens == r.completion_tokens


def test_truncated_last_line_is_dropped_and_the_file_repaired(tmp_path, log_lines):
    path = tmp_path / "c.jsonl"
    with FakeOpenAI() as srv:
        client(srv, path).run([req(0), req(1)])
        whole = path.read_bytes()
        path.write_bytes(whole + b'{"v": 1, "key": "abc", "text": "half a li')  # a kill -9 during a write
        c = client(srv, path)
        c.run([req(0), req(1), req(2)])
    assert c.summary.cached == 2 and c.summary.sent == 1
    assert any("truncated last line" in m for m in log_lines)
    assert all(json.loads(ln) for ln in path.read_text().splitlines())  # repaired: every line whole
    path.write_bytes(b'{"v": 1, "key": "a", "text": "x"}\nnot json\n' + whole)
    with pytest.raises(DataError, match=r"c.jsonl:2"):
        ResponseCache(path)


def test_key_covers_model_messages_params_tag_and_image_content_but_not_the_url(tmp_path):
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), "red").save(a)
    Image.new("RGB", (4, 4), "blue").save(b)
    base = ChatRequest(
        messages=[{"role": "user", "content": "<image>\nwhat colour?"}],
        images=[str(a)],
        params={"temperature": 0.0},
        tag="t-v1",
    )
    k = request_key("m", base)
    assert k == request_key("m", ChatRequest(**{**base.__dict__}))
    assert k != request_key("m2", base)
    assert k != request_key("m", ChatRequest(base.messages, base.images, {"temperature": 0.7}, base.tag))
    assert k != request_key("m", ChatRequest(base.messages, base.images, base.params, "t-v2"))
    assert k != request_key("m", ChatRequest(base.messages, [str(b)], base.params, base.tag))
    c = tmp_path / "copy.png"
    c.write_bytes(a.read_bytes())
    assert k == request_key("m", ChatRequest(base.messages, [str(c)], base.params, base.tag))  # content, not path
    seen = []
    with FakeOpenAI(responder=lambda body: (seen.append(body) or "red", "stop")) as s1, FakeOpenAI() as s2:
        RemoteClient(RemoteConfig(base_url=s1.url, model="m", api_key="k1"), tmp_path / "c.jsonl").run([base])
        c2 = RemoteClient(RemoteConfig(base_url=s2.url, model="m", api_key="k2"), tmp_path / "c.jsonl")
        c2.run([base])
    assert c2.summary.cached == 1 and not s2.log  # another URL and key: the same question, not re-asked
    part = seen[0]["messages"][0]["content"][0]
    assert part["type"] == "image_url"
    head, data = part["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64" and base64.b64decode(data) == a.read_bytes()


def test_ollama_style_input_truncation_is_detected(tmp_path, log_lines):
    long = ChatRequest(messages=[{"role": "user", "content": "describe " * 400}])
    with FakeOpenAI(prompt_tokens_cap=64) as srv:  # Ollama cuts the input to num_ctx and says so only in usage
        c = client(srv)
        short, cut = c.run([req(0), long])
    assert not short.input_truncated and cut.input_truncated and c.summary.input_truncated == 1
    assert any("num_ctx" in m for m in log_lines)


@pytest.mark.parametrize("kind", ["rpm", "tpm"])
def test_rate_limits_hold_within_ten_percent(kind):
    """Arrival rate at the server, once each of the 8 connections has carried its first request (opening a
    connection delays that first request, bunching the first few arrivals on a busy machine)."""
    n, conc = 33, 8
    limits = {"rpm": dict(rpm=600), "tpm": dict(tpm=60_000)}[kind]  # both: 10 requests/s (100 tokens each)
    with FakeOpenAI(usage_tokens=(60, 40)) as srv:
        client(srv, concurrency=conc, **limits).run([req(i, max_tokens=40) for i in range(n)])
    starts = sorted(e["t"] for e in srv.log)[conc:]
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    assert abs(rate - 10.0) / 10.0 < 0.10, rate


def test_pacer_spaces_starts():
    now = [0.0]
    p = Pacer(rpm=120, clock=lambda: now[0])
    p.acquire(1)
    assert p._next_req == pytest.approx(0.5)
    t = time.monotonic()
    Pacer().acquire(10**9)  # no limits: no wait
    assert time.monotonic() - t < 0.5


def test_an_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as s:  # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = RemoteClient(RemoteConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff=0.01))
    with pytest.raises(ConfigError, match="cannot reach"):
        c.run([req(0)])
