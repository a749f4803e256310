"""eval.backend=openai: `vlmtune serve` as a real process (same metrics and predictions as eval.backend=hf, loglik
included), faults and a kill -9 against the loopback fake server (tests/fake_openai.py), loglik refused where a
server has no prompt log-probabilities."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai", reason="eval.backend=openai needs the openai client (the test extra has it)")
pytest.importorskip("fastapi", reason="vlmtune serve needs the serve extra (fastapi, uvicorn)")

from tests.fake_openai import FakeOpenAI  # noqa: E402
from tests.helpers import Server, free_port  # noqa: E402
from vlmtune.cli import main  # noqa: E402
from vlmtune.config import EvalConfig, ModelConfig  # noqa: E402
from vlmtune.errors import ConfigError, VlmtuneError  # noqa: E402
from vlmtune.eval.remote import UNKNOWN, evaluate_remote  # noqa: E402
from vlmtune.tasks import build_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV, KEY = "VLMTUNE_TEST_EVAL_KEY", "sk-test-eval-key-0042"


@pytest.fixture(scope="module")
def count_file(tmp_path_factory):
    from vlmtune.data.synth import synthesize

    return synthesize("count", 16, tmp_path_factory.mktemp("count-remote"), seed=2)


@pytest.fixture(scope="module")
def examples(count_file):
    from vlmtune.data.example import load_jsonl

    return load_jsonl(count_file)


@pytest.fixture(scope="module")
def served(lively_model_dir, tmp_path_factory):
    s = Server(
        [str(lively_model_dir), "--name", "micro", "--api-key", KEY, "--max-new-tokens", "12"],
        tmp_path_factory.mktemp("serve-eval"),
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def hf_model(lively_model_dir):
    from vlmtune.build import resolve_model
    from vlmtune.models.load import load_model

    ref = resolve_model(ModelConfig(name=str(lively_model_dir), device="cpu"))
    model, processor = load_model(ref)
    return ref, model, processor


def remote_cfg(url: str, **kw) -> EvalConfig:
    return EvalConfig(**{"backend": "openai", "endpoint": url, "max_new_tokens": 12, "concurrency": 4, **kw})


def read(out: Path) -> tuple[list[dict], dict, dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "metrics.json").read_text()), json.loads((out / "fingerprint.json").read_text())


def same_rows(a: list[dict], b: list[dict], keys=("id", "prediction", "parsed", "parse_ok", "correct", "target")):
    return [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]


def test_served_model_gives_the_hf_metrics_and_predictions(served, hf_model, examples, tmp_path, monkeypatch):
    from vlmtune.eval.run import evaluate

    ref, model, processor = hf_model
    task = build_task("count")
    evaluate(
        model,
        processor,
        examples,
        task,
        tmp_path / "hf",
        label="hf",
        ref=ref,
        ecfg=EvalConfig(max_new_tokens=12, batch_size=4),
    )
    monkeypatch.setenv(KEY_ENV, KEY)
    cfg = remote_cfg(served.url, model="micro", api_key_env=KEY_ENV)
    before = sum(served.batch_sizes())
    evaluate_remote(examples, task, tmp_path / "remote", label="served", ecfg=cfg)
    assert sum(served.batch_sizes()) - before == len(examples)  # one request per example reached the model
    hf_rows, hf_metrics, hf_fp = read(tmp_path / "hf")
    rows, metrics, fp = read(tmp_path / "remote")
    assert len({r["prediction"] for r in rows}) > 3  # the answers differ from image to image
    assert same_rows(hf_rows, rows)
    assert metrics["metrics"] == hf_metrics["metrics"]
    assert fp["backend"] == "openai" and fp["model"] == "micro" and fp["chat_template_hash"] == UNKNOWN
    assert fp["server"]["listed"]["owned_by"] == "vlmtune" and fp["server"]["answered_by"] == ["micro"]
    assert fp["decoding"]["temperature"] == 0.0 and fp["decoding"]["max_new_tokens"] == 12
    assert set(fp) == set(hf_fp) | {"server"}
    for f in (tmp_path / "remote").iterdir():  # the key is never written
        assert KEY not in f.read_text(errors="replace"), f

    # compare: a served model's template is the server's, so against the hf evaluation it is a mismatch
    assert main(["compare", str(tmp_path / "hf"), str(tmp_path / "remote"), "--out", str(tmp_path / "cmp")]) == 2
    assert (
        main(
            [
                "compare",
                str(tmp_path / "hf"),
                str(tmp_path / "remote"),
                "--out",
                str(tmp_path / "cmp"),
                "--allow-mismatch",
            ]
        )
        == 0
    )
    diffs = {
        d["key"] for d in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["fingerprint_differences"]
    }
    assert {"chat_template_hash", "backend", "prompt_hash", "image_size"} <= diffs

    # a finished evaluation re-scores for free: every answer comes from the cache, even with the server gone
    gone = f"http://127.0.0.1:{free_port()}/v1"
    evaluate_remote(examples, task, tmp_path / "remote", label="served", ecfg=remote_cfg(gone, model="micro"))
    again, again_metrics, again_fp = read(tmp_path / "remote")
    assert same_rows(again, rows) and again_metrics["metrics"] == metrics["metrics"]
    remote = json.loads((tmp_path / "remote" / "remote.json").read_text())
    assert remote["sent"] == 0 and remote["cached"] == len(examples)
    assert "error" in again_fp["server"]["listed"] and again_fp["server"]["answered_by"] == ["micro"]


def test_loglik_through_the_server_scores_as_the_hf_backend(served, hf_model, examples, tmp_path, monkeypatch):
    from vlmtune.eval.run import evaluate

    ref, model, processor = hf_model
    task = build_task("count", {"max_count": 3})  # options 0..3: 1 + 2 * 4 requests per example
    few = examples[:6]
    evaluate(
        model, processor, few, task, tmp_path / "hf", label="hf", ref=ref, ecfg=EvalConfig(mode="loglik", batch_size=4)
    )
    monkeypatch.setenv(KEY_ENV, KEY)
    evaluate_remote(few, task, tmp_path / "remote", ecfg=remote_cfg(served.url, mode="loglik", api_key_env=KEY_ENV))
    hf_rows, hf_metrics, _ = read(tmp_path / "hf")
    rows, metrics, fp = read(tmp_path / "remote")
    assert fp["model"] == "micro"  # eval.model empty: the only model /v1/models lists
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in hf_rows]
    for a, b in zip(hf_rows, rows):
        assert len(a["scores"]) == len(b["scores"]) > 1
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-3)
    assert metrics["metrics"] == hf_metrics["metrics"]


def count_answer(body: dict) -> tuple[str, str]:
    """A fake server's answer to a count question: a number that depends on the image."""
    url = next(p["image_url"]["url"] for p in body["messages"][-1]["content"] if p["type"] == "image_url")
    return f"There are {int(hashlib.sha256(url.encode()).hexdigest(), 16) % 4} red shapes.", "stop"


def test_faults_are_retried_and_scores_follow_the_answers(examples, tmp_path):
    faulty = {0: "429", 1: "500", 2: "hang", 3: "malformed"}  # the first four questions the server sees
    first_seen: list[str] = []

    def script(body: dict, attempt: int) -> str | None:
        key = json.dumps(body["messages"], sort_keys=True)
        if key not in first_seen:
            first_seen.append(key)
        return faulty.get(first_seen.index(key)) if attempt == 0 else None

    with FakeOpenAI(responder=count_answer, script=script, retry_after=0.3, hang_s=3.0) as srv:
        result = evaluate_remote(
            examples, build_task("count"), tmp_path / "out", ecfg=remote_cfg(srv.url, timeout=1.0, concurrency=1)
        )
    assert [e["fault"] for e in srv.log if e["fault"]] == ["429", "500", "hang", "malformed"]
    counts = srv.ok_counts()
    assert len(counts) == len(examples) and set(counts.values()) == {1}  # each answered once, none lost
    assert len(srv.log) == len(examples) + 4  # the 4 faults were asked again
    remote = json.loads((tmp_path / "out" / "remote.json").read_text())
    assert remote["retries"] == 4 and remote["failed"] == 0 and remote["sent"] == len(examples)
    rows, _, _ = read(tmp_path / "out")
    assert all(r["parse_ok"] for r in rows)
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))


def test_failures_stop_the_run_and_the_rerun_asks_only_them(examples, tmp_path):
    broken, bad = {"on": True}, set()

    def script(body: dict, attempt: int) -> str | None:
        key = json.dumps(body["messages"], sort_keys=True)
        bad.update(set() if bad else {key})  # the first question the server sees fails while broken
        return "500" if broken["on"] and key in bad else None

    with FakeOpenAI(responder=count_answer, script=script) as srv:
        cfg = remote_cfg(srv.url, max_retries=1)
        with pytest.raises(VlmtuneError, match="rerun the same command"):
            evaluate_remote(examples, build_task("count"), tmp_path / "out", ecfg=cfg)
        n_failed = len({e["body_key"] for e in srv.log if e["status"] == 500})
        assert n_failed == 1 and not (tmp_path / "out" / "metrics.json").exists()
        broken["on"] = False
        asked = len(srv.log)
        evaluate_remote(examples, build_task("count"), tmp_path / "out", ecfg=cfg)
    assert len(srv.log) - asked == n_failed  # only the failed ones were asked again
    assert set(srv.ok_counts().values()) == {1} and len(srv.ok_counts()) == len(examples)


def test_kill_9_mid_evaluation_resumes_without_duplicate_or_lost_requests(count_file, examples, tmp_path):
    """The process is killed while two requests are in flight (the server holds them unanswered); the rerun asks
    those two and the ones never sent, and nothing else: the server answers each example exactly once."""
    out, n = tmp_path / "out", len(examples)
    holding = {"on": False}

    def script(body: dict, attempt: int) -> str | None:
        answered = sum(e["status"] == 200 for e in srv.log)
        if attempt == 0 and (holding["on"] or answered >= 6):
            holding["on"] = True
            return "hang"
        return None

    args = [
        "eval",
        "--backend",
        "openai",
        "--data",
        str(count_file),
        "--out",
        str(out),
        "--concurrency",
        "2",
        "--max-new-tokens",
        "12",
    ]
    with FakeOpenAI(responder=count_answer, script=script, hang_s=5.0) as srv:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlmtune", *args, "--endpoint", srv.url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(e["status"] == "hang" for e in srv.log) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        cache = out / "responses.jsonl"
        lines_at_kill = cache.read_text().splitlines()
        assert len(lines_at_kill) == 6 and not (out / "metrics.json").exists()
        holding["on"] = False
        srv.script = lambda body, attempt: None
        assert main([*args, "--endpoint", srv.url]) == 0
    answered = srv.ok_counts()
    assert len(answered) == n and set(answered.values()) == {1}  # none lost, none answered twice
    assert sum(e["status"] == "hang" for e in srv.log) == 2  # the two in flight at the kill, never answered
    assert len(srv.log) == n + 2
    lines = cache.read_text().splitlines()
    assert lines[:6] == lines_at_kill and len(lines) == n and len({json.loads(x)["key"] for x in lines}) == n
    rows, _, _ = read(out)
    assert [r["id"] for r in rows] == [ex.id for ex in examples]
    assert all(r["prediction"] == count_answer_for(ex) for r, ex in zip(rows, examples))


def count_answer_for(ex) -> str:
    from vlmtune.infer.remote import data_url

    return count_answer(
        {"messages": [{"content": [{"type": "image_url", "image_url": {"url": data_url(ex.images[0])}}]}]}
    )[0]


def test_loglik_is_a_clear_error_without_prompt_logprobs(examples, tmp_path, count_file, capsys):
    with FakeOpenAI(responder=count_answer) as srv:  # speaks the protocol, returns no prompt_logprobs (as Ollama)
        with pytest.raises(ConfigError, match="prompt_logprobs.*vLLM"):
            evaluate_remote(examples, build_task("count"), tmp_path / "a", ecfg=remote_cfg(srv.url, mode="loglik"))
        assert len(srv.log) == 1  # found out with one request, not hundreds
        code = main(
            [
                "eval",
                "--backend",
                "openai",
                "--endpoint",
                srv.url,
                "--data",
                str(count_file),
                "--mode",
                "loglik",
                "--out",
                str(tmp_path / "b"),
            ]
        )
    err = capsys.readouterr().err
    assert code == 2 and "prompt_logprobs" in err and "Traceback" not in err


def test_config_keys_and_refusals(tmp_path, capsys):
    from vlmtune.config import describe_fields, load_config

    text = describe_fields()
    for key in ("eval.backend", "eval.endpoint", "eval.model", "eval.concurrency"):
        assert key in text
    cfg = load_config(
        None,
        [
            "eval.backend=openai",
            "eval.endpoint=http://localhost:11434/v1",
            "eval.model=gemma3:4b",
            "eval.concurrency=2",
        ],
    )
    assert (cfg.eval.backend, cfg.eval.model, cfg.eval.concurrency) == ("openai", "gemma3:4b", 2)
    with pytest.raises(ConfigError, match="eval.backend"):
        load_config(None, ["eval.backend=vllm"])
    with pytest.raises(ConfigError, match="eval.endpoint"):
        load_config(None, ["eval.backend=openai", "eval.endpoint=localhost:8000"])
    # a run trains and evaluates here: a served backend in a recipe is refused before anything runs
    assert main(["validate", str(ROOT / "recipes" / "quickstart.yaml"), "eval.backend=openai"]) == 2
    assert "vlmtune eval --backend openai" in capsys.readouterr().err
    assert main(["eval", "--backend", "openai", "--adapter", "x", "--data", "d.jsonl", "--model", "m"]) == 2
