"""`vlmtune ui` in a real browser: Debian's chromium driven by Playwright (no browser download), against the app
started as a process on a free loopback port over a real run directory."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="the browser tests need Debian's chromium (apt-get install -y chromium; .ci/run installs it)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(lively_model_dir, tmp_path_factory):
    """A real run directory: the quickstart recipe on the micro model, a few steps."""
    from vlmtune.cli import main

    out = tmp_path_factory.mktemp("ui") / "runs"
    assert (
        main(
            [
                "run",
                str(ROOT / "recipes" / "quickstart.yaml"),
                f"output_dir={out}",
                "name=uirun",
                f"model.name={lively_model_dir}",
                "data.n=64",
                "train.max_steps=2",
                "train.batch_size=8",
                "eval.n_boot=100",
                "eval.max_new_tokens=4",
                "-q",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def app_url(runs, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("uilog") / "ui.log"
    env = {**os.environ, "VLMTUNE_CACHE": str(runs.parent / "cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmtune", "ui", "--runs", str(runs), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        env=env,
    )
    deadline = time.time() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(f"vlmtune ui did not start:\n{log.read_text()}")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(app_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (test extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(app_url)
        page.wait_for_selector("#chat-question textarea")
        yield page
        browser.close()


def expected_answer(model_dir, adapter, image, question):
    from vlmtune.config import ModelConfig
    from vlmtune.infer.chat import Conversation, complete
    from vlmtune.models.load import load_model

    model, processor = load_model(ModelConfig(name=str(model_dir), device="cpu"), adapter=adapter)
    conv = Conversation()
    conv.attach(image)
    return complete(model, processor, [conv.ask(question, max_new_tokens=64)])[0].text


def test_chat_upload_ask_and_see_the_answer(page, runs, lively_model_dir):
    adapter = str(runs / "uirun" / "adapter")
    image = json.loads((runs / "uirun" / "data" / "test.jsonl").read_text().splitlines()[0])["images"][0]
    image = str((runs / "uirun" / "data" / image).resolve()) if not os.path.isabs(image) else image
    question = "How many red shapes are there?"
    want = expected_answer(lively_model_dir, adapter, image, question)
    assert want

    page.click("#chat-adapter input")
    page.get_by_role("option", name=adapter).click()
    # picking a run's adapter picks the model it was trained on
    page.wait_for_function(f"document.querySelector('#chat-model input').value === {json.dumps(str(lively_model_dir))}")
    page.locator("#chat-image input[type=file]").set_input_files(image)
    page.wait_for_selector("#chat-image img")
    page.fill("#chat-question textarea", question)
    page.click("#chat-ask")
    page.wait_for_function(f"document.querySelector('#chat-log').innerText.includes({json.dumps(want)})")
    page.wait_for_selector("#chat-log img")  # under load the answer can show before the image has rendered
    log = page.locator("#chat-log")
    assert question in log.inner_text() and log.locator("img").count() >= 1  # the image is in the conversation
    assert page.locator("#memory-panel").count() == 1  # the chat's memory panel


def test_chat_memory_recalls_an_earlier_conversation_with_its_scores(page, runs, lively_model_dir):
    """A fresh session: one conversation, then a new one whose question shares words with it. The panel shows the
    recalled turn with its scores, and the answer is the model's answer to the question with that reminder in
    front, all as vlmtune.memory.chat computes them here."""
    from vlmtune.config import ModelConfig
    from vlmtune.infer.chat import Conversation, complete
    from vlmtune.memory.chat import ChatMemory, with_reminder
    from vlmtune.models.load import load_model

    adapter = str(runs / "uirun" / "adapter")
    first = ["My cat Miso has three red squares.", "My dog Rex has two blue circles."]
    second = "How many red squares does Miso have?"
    model, processor = load_model(ModelConfig(name=str(lively_model_dir), device="cpu"), adapter=adapter)
    memory, conv, said = ChatMemory(), Conversation(), []
    for question in first:
        req = conv.ask(question, max_new_tokens=64)
        said.append(complete(model, processor, [req])[0].text)
        conv.answered(req, said[-1])
        memory.remember(question, said[-1])
    memory.new_conversation()
    reminder = memory.recall(second)
    want = complete(model, processor, [Conversation().ask(with_reminder(reminder, second), max_new_tokens=64)])[0].text
    assert want and f"User: {first[0]}" in reminder.text and "Rex" not in reminder.text
    assert float(memory.rows(reminder)[0][3]) > 0  # a score that is not all ties

    page.reload()  # a new session: an empty memory
    page.wait_for_selector("#chat-question textarea")
    page.click("#chat-adapter input")
    page.get_by_role("option", name=adapter).click()
    page.wait_for_function(f"document.querySelector('#chat-model input').value === {json.dumps(str(lively_model_dir))}")
    for question, answer in zip(first, said):
        page.fill("#chat-question textarea", question)
        page.click("#chat-ask")
        page.wait_for_function(f"document.querySelector('#chat-log').innerText.includes({json.dumps(question)})")
        page.wait_for_function(f"document.querySelector('#chat-log').innerText.includes({json.dumps(answer)})")
        assert page.locator("#memory-reminder textarea").input_value() == ""  # nothing earlier to recall yet
    page.click("#chat-reset")
    page.wait_for_function(f"!document.querySelector('#chat-log').innerText.includes({json.dumps(first[0])})")
    page.fill("#chat-question textarea", second)
    page.click("#chat-ask")
    page.wait_for_function(f"document.querySelector('#chat-log').innerText.includes({json.dumps(want)})")
    assert page.locator("#memory-reminder textarea").input_value() == reminder.text
    table = page.locator("#memory-items").inner_text()
    for row in memory.rows(reminder):  # each recalled turn with its score and scaled parts
        assert all(str(cell) in table for cell in row), (row, table)


def test_runs_tab_shows_metrics_and_every_prediction(page, runs):
    page.get_by_role("tab", name="Runs").click()
    metrics = json.loads((runs / "uirun" / "finetuned" / "metrics.json").read_text())["metrics"]
    method = metrics["accuracy"]["method"]  # each interval's method, as metrics.json names it
    page.wait_for_function(f"document.querySelector('#run-metrics').innerText.includes({json.dumps(method)})")
    text = page.locator("#run-metrics").inner_text()
    assert "accuracy" in text and method in text
    lo, hi = metrics["accuracy"]["ci"]
    assert f"[{lo:.3f}, {hi:.3f}]" in text
    test_ids = [json.loads(l)["id"] for l in (runs / "uirun" / "data" / "test.jsonl").read_text().splitlines()]
    preds = page.locator("#run-predictions")
    page.wait_for_function(f"document.querySelector('#run-predictions').innerText.includes({json.dumps(test_ids[-1])})")
    assert all(i in preds.inner_text() for i in test_ids)
    assert preds.locator("img").count() >= len(test_ids)  # a thumbnail per prediction
    page.fill("#pred-filter input, #pred-filter textarea", test_ids[0])
    page.press("#pred-filter input, #pred-filter textarea", "Enter")
    page.wait_for_function(f"!document.querySelector('#run-predictions').innerText.includes({json.dumps(test_ids[1])})")
    assert test_ids[0] in preds.inner_text()


def test_compare_tab_writes_the_report(page, runs):
    page.get_by_role("tab", name="Compare").click()
    for box, name in (("#cmp-base", "uirun/zero_shot"), ("#cmp-cand", "uirun/finetuned")):
        page.click(f"{box} input")
        page.locator(f"{box} [role=option][aria-label='{name}']").click()
    page.click("#cmp-go")
    page.wait_for_function("document.querySelector('#cmp-report').innerText.includes('McNemar')")
    assert "zero-shot" in page.locator("#cmp-report").inner_text()
