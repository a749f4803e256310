"""`vlmtune serve` as a real process on a free loopback port, driven by the official `openai` client and plain HTTP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (the test extra has it)")
pytest.importorskip("fastapi", reason="vlmtune serve needs the serve extra (fastapi, uvicorn)")

from tests.helpers import Server  # noqa: E402

KEY = "test-key-123"


def data_url(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def question_of(ex) -> str:
    return ex.messages[0]["content"].split("\n", 1)[1]  # "<image>\nHow many blue shapes are there?"


def image_message(ex, url: str | None = None) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url or data_url(ex.images[0])}},
                {"type": "text", "text": question_of(ex)},
            ],
        }
    ]


@pytest.fixture(scope="module")
def server(lively_model_dir, tmp_path_factory):
    s = Server(
        [str(lively_model_dir), "--name", "micro", "--api-key", KEY, "--max-new-tokens", "12"],
        tmp_path_factory.mktemp("serve"),
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


def in_process(model_dir, examples, max_new_tokens=12):
    """The answers vlmtune's own generate() gives, one example at a time (no batching, no HTTP)."""
    from vlmtune.config import ModelConfig
    from vlmtune.infer.generate import generate
    from vlmtune.models.load import load_model

    model, processor = load_model(ModelConfig(name=str(model_dir), device="cpu"))
    return [generate(model, processor, [ex], batch_size=1, max_new_tokens=max_new_tokens)[0] for ex in examples]


def test_concurrent_requests_with_images_equal_in_process_generation(server, client, lively_model_dir, count_data):
    examples = count_data[:12]
    expected = in_process(lively_model_dir, examples)

    def ask(ex):
        r = client.chat.completions.create(model="micro", messages=image_message(ex), max_tokens=12)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage

    before = len(server.batch_sizes())
    with ThreadPoolExecutor(len(examples)) as pool:
        got = list(pool.map(ask, examples))
    assert [g[0] for g in got] == expected
    assert all(g[1] in ("stop", "length") and g[2].completion_tokens >= 1 and g[2].prompt_tokens > 16 for g in got)
    sizes = server.batch_sizes()[before:]
    assert sum(sizes) == len(examples) and max(sizes) > 1, sizes  # answered together, not one by one


def test_local_path_and_stream(server, client, lively_model_dir, count_data):
    candidates = count_data[12:24]
    # a random-weight model often answers with an end token at once: stream an answer of several characters
    expected, ex = max(zip(in_process(lively_model_dir, candidates), candidates), key=lambda t: len(t[0]))
    assert len(expected) >= 4, expected
    msg = image_message(ex, url=ex.images[0])
    plain = client.chat.completions.create(model="micro", messages=msg, max_tokens=12)
    assert plain.choices[0].message.content == expected
    chunks = list(
        client.chat.completions.create(
            model="micro", messages=msg, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == expected
    assert len([d for d in deltas if d]) >= 2  # it arrived in pieces, as it was generated
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_max_tokens_cuts_the_greedy_answer(client, count_data):
    msg = image_message(count_data[0])
    long = client.chat.completions.create(model="micro", messages=msg, max_tokens=12)
    short = client.chat.completions.create(model="micro", messages=msg, max_tokens=3)
    assert short.usage.completion_tokens <= 3
    assert long.choices[0].message.content.startswith(short.choices[0].message.content)


def test_models_endpoint_and_keys(server, client):
    assert [m.id for m in client.models.list()] == ["micro"]
    for key in ("wrong-key", None):
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        req = urllib.request.Request(server.url + "/models", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 401
        assert "API key" in json.loads(e.value.read())["error"]["message"]
    bad = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="micro", messages=[{"role": "user", "content": "hi"}])


def test_bad_requests_get_clear_4xx(server, client, tmp_path):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for url, needle in [
        ("data:image/png;base64,aGVsbG8=", "not a readable image"),
        (str(broken), "not a readable image"),
        (str(tmp_path / "missing.png"), "no image file"),
        ("https://example.com/cat.png", "remote image URLs are not fetched"),
    ]:
        with pytest.raises(openai.BadRequestError, match=needle):
            client.chat.completions.create(
                model="micro",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}],
                    }
                ],
            )
    with pytest.raises(openai.BadRequestError, match="too many tokens"):
        client.chat.completions.create(model="micro", messages=[{"role": "user", "content": "hi"}], max_tokens=100_000)
    with pytest.raises(openai.BadRequestError, match="too many tokens"):
        client.chat.completions.create(model="micro", messages=[{"role": "user", "content": "word " * 2000}])

    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="micro", messages=[{"role": "robot", "content": "hi"}])
    req = urllib.request.Request(
        server.url + "/chat/completions",
        data=b"{not json",
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and "not valid JSON" in json.loads(e.value.read())["error"]["message"]
    # the server is still answering after all of that
    assert (
        client.chat.completions.create(
            model="micro", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        ).usage.completion_tokens
        <= 2
    )


def test_curl_works_unchanged(server, count_data):
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"model": "micro", "max_tokens": 4, "messages": image_message(count_data[1])})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            server.url + "/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: Bearer {KEY}",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["choices"][0]["message"]["role"] == "assistant"


def test_public_host_needs_a_key(micro_model_dir):
    out = subprocess.run(
        [sys.executable, "-m", "vlmtune", "serve", str(micro_model_dir), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VLMTUNE_API_KEY": ""},
    )
    assert out.returncode == 2 and "--api-key" in out.stderr and "Traceback" not in out.stderr


def test_a_default_max_tokens_shrinks_to_the_context(micro_model_dir):
    from vlmtune.config import ModelConfig
    from vlmtune.errors import DataError
    from vlmtune.infer.chat import ChatRequest, check_request, context_length
    from vlmtune.models.load import load_model

    model, processor = load_model(ModelConfig(name=str(micro_model_dir), device="cpu"))
    msgs = [{"role": "user", "content": "word " * 50}]
    default = ChatRequest(msgs, max_new_tokens=100_000, fit_to_context=True)
    n = check_request(model, processor, default)
    assert default.max_new_tokens == context_length(model) - n  # what the server sends when max_tokens is absent
    with pytest.raises(DataError, match="too many tokens"):
        check_request(model, processor, ChatRequest(msgs, max_new_tokens=100_000))  # asked for: refused
