"""vlmtune teach: prompts and the gold-answer check, filters (on seed 001's real failures), cache and resume
(kill -9), re-asking rules, export, report, and the local backend. Remote requests go to a real HTTP server on a
loopback port (tests/fake_openai.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")

from tests.fake_openai import FakeOpenAI  # noqa: E402
from vlmtune.cli import main  # noqa: E402
from vlmtune.config import TeachConfig  # noqa: E402
from vlmtune.data.example import Example, load_jsonl  # noqa: E402
from vlmtune.errors import ConfigError, DataError  # noqa: E402
from vlmtune.tasks import build_task  # noqa: E402
from vlmtune.teacher import prompts  # noqa: E402
from vlmtune.teacher.filters import FilterConfig, check, parse_output  # noqa: E402
from vlmtune.teacher.prompts import check_teacher_input, context_of, load_template  # noqa: E402
from vlmtune.teacher.run import teach  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED_CASES = json.loads((ROOT / "tests" / "data" / "seed001_teacher_outputs.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dialog_file(tmp_path_factory):
    from vlmtune.data.synth import synthesize

    return synthesize("dialog", 24, tmp_path_factory.mktemp("dialog"), seed=3)


@pytest.fixture(scope="module")
def dialogs(dialog_file):
    return load_jsonl(dialog_file)


def conversation_of(body: dict) -> str:
    user = body["messages"][-1]["content"]
    text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user if p["type"] == "text")
    conv = text.split("conversation:\n")[-1].strip()
    return conv[: -len("reply:")].strip() if conv.endswith("reply:") else conv  # reminder_base ends with "reply:"


def good_teacher(examples: list[Example]):
    """A fake teacher that recalls the history correctly and knows the gold answers (a strong teacher)."""
    gold = {context_of(ex)["conversation"]: ex.answer_text() for ex in examples}

    def respond(body: dict) -> tuple[str, str]:
        conv = conversation_of(body)
        lines = conv.splitlines()
        answers = [ln[3:] for ln in lines if ln.startswith("A: ")]
        recall = ("Earlier answers: " + "; ".join(answers) + ". ") if answers else ""
        return f"<reminder>{recall}Now the question is: {lines[-1][3:]}</reminder>\n{gold[conv]}", "stop"

    return respond


def tcfg(srv: FakeOpenAI, tmp_path: Path, **kw) -> TeachConfig:
    base = dict(
        target="reminder+gold",
        backend="openai",
        model="teacher",
        base_url=srv.url,
        concurrency=4,
        timeout=2.0,
        cache=str(tmp_path / "cache.jsonl"),
        filters={"skip": []},
    )
    base.update(kw)
    return TeachConfig(**base)


# ------------------------------------------------------------------------------------------------- prompts
def test_shipped_templates_are_versioned_and_render_the_dialogue(dialogs):
    ex = next(e for e in dialogs if e.target["round"] >= 3)
    for name, block in [("reminder", "reminder"), ("reasoning", "reasoning"), ("reminder_base", "reminder")]:
        tpl = load_template(name)
        assert tpl.block == block and tpl.tag.startswith(f"{name}-v1+") and len(tpl.sha) == 12
        msgs = tpl.messages(ex)
        user = msgs[-1]["content"]
        assert user.startswith("<image>\n") and user.count("<image>") == 1
        assert ex.meta["question"] in user and f"A: {ex.prompt_messages()[1]['content']}" in user
        assert ex.answer_text() not in user.split(ex.meta["question"])[-1]


def test_gold_answer_enters_only_with_rationalize(tmp_path, dialogs):
    ex, task = dialogs[0], build_task("dialog")
    own = tmp_path / "mine.j2"
    own.write_text(
        "{% set version = '3' %}{% block user %}{{ images }}{{ conversation }}\n"
        "The answer is {{ gold_answer }}; explain it.{% endblock %}"
    )
    with pytest.raises(ConfigError, match="rationalize"):
        check_teacher_input(load_template(str(own)), ex, task)
    tpl = load_template(str(own), rationalize=True)
    assert tpl.tag.startswith("mine-v3+") and tpl.tag.endswith("+rationalize")
    assert f"The answer is {ex.answer_text()};" in check_teacher_input(tpl, ex, task)[-1]["content"]


def test_a_teacher_input_that_depends_on_the_gold_is_refused(dialogs, monkeypatch):
    ex, task, tpl = dialogs[0], build_task("dialog"), load_template("reminder")
    # the data: the asked round's gold answer written into the last user message (the seed's bug)
    leaky = Example(
        **{
            **ex.__dict__,
            "messages": [
                *ex.messages[:-2],
                {"role": "user", "content": ex.messages[-2]["content"] + f" A: {ex.answer_text()}"},
                ex.messages[-1],
            ],
        }
    )
    with pytest.raises(DataError, match="gold answer"):
        check_teacher_input(tpl, leaky, task)
    # the code: a context that reads the target (what a regression would do) is caught by the canary render
    real = prompts.context_of

    def leaking(example, rationalize=False):
        ctx = real(example, rationalize=rationalize)
        ctx["conversation"] += "\n(hint: " + str(example.target["answer"]) + ")"
        return ctx

    monkeypatch.setattr(prompts, "context_of", leaking)
    with pytest.raises(DataError, match="depends on the asked round's gold answer"):
        check_teacher_input(tpl, ex, task)


# ------------------------------------------------------------------------------------------------- filters
def seed_example(case: dict, gold: str = "gold") -> Example:
    """A seed 001 record ({image_id, conversation: "Q: ..\\nA: ..", response}) as a dialog Example."""
    msgs = [
        {"role": "user" if ln.startswith("Q: ") else "assistant", "content": ln[3:]}
        for ln in case["conversation"].split("\n")
    ]
    r = sum(m["role"] == "user" for m in msgs)
    return Example(
        id=str(case["image_id"]),
        task="dialog",
        messages=msgs + [{"role": "assistant", "content": gold}],
        target={"answer": gold, "gt_index": 0, "relevance": None, "round": r},
        options=[gold],
    )


@pytest.mark.parametrize("case", SEED_CASES, ids=[str(c["image_id"]) for c in SEED_CASES])
def test_filters_catch_the_seeds_real_failures(case):
    """Outputs of gemma3 from seed 001's published results (reminder_tag/results/val_4b_prompt.json): preambles
    ("Okay, here's the generated response..."), invented questions ("Is there a sign?" when the question was
    about trees; "if she is smiling" when it was whether it is sunny). Their gold answers are not published, so
    agreement is checked separately below."""
    out = parse_output(case["response"])
    verdict = check(out, "stop", False, seed_example(case), build_task("dialog"), [], FilterConfig(skip=["agreement"]))
    assert verdict.reasons == case["expect"], verdict.details


def test_agreement_length_and_finish_on_the_seed_shape():
    case = SEED_CASES[-1]  # "is there a computer chair" -> "No, there is no computer chair in the image."
    task, out = build_task("dialog"), parse_output(case["response"])
    assert "agreement" in check(out, "stop", False, seed_example(case, "yes"), task, [], FilterConfig()).reasons
    short = parse_output(case["response"].rsplit("\n", 1)[0] + "\nno")
    assert check(short, "stop", False, seed_example(case, "no"), task, [], FilterConfig()).reasons == []
    assert check(short, "length", False, seed_example(case, "no"), task, [], FilterConfig()).reasons == ["finish"]
    assert check(short, "stop", True, seed_example(case, "no"), task, [], FilterConfig()).reasons == ["finish"]
    unclosed = parse_output("<reminder>The photo is in color. Now: is there a computer chair?\nno")
    v = check(unclosed, "stop", False, seed_example(case, "no"), task, [], FilterConfig())
    assert v.reasons[0] == "format" and "closing" in v.details["format"]
    korean = parse_output("<reminder>사진은 컬러입니다. 이제 의자가 있는지 묻습니다.</reminder>\nno")
    v = check(korean, "stop", False, seed_example(case, "no"), task, [], FilterConfig(skip=["grounding"]))
    assert v.reasons == ["language"]
    assert (
        check(
            korean, "stop", False, seed_example(case, "no"), task, [], FilterConfig(skip=["grounding"], language="ko")
        ).reasons
        == []
    )


def test_shapes_world_grounding_is_exact_and_future_rounds_are_caught(dialogs):
    task = build_task("dialog")
    ex = next(e for e in dialogs if e.target["round"] >= 3)
    history = " ".join(m["content"] for m in ex.prompt_messages())
    colour = next(c for c in ("red", "green", "blue", "yellow") if c not in history)
    gold = ex.answer_text()
    invented = parse_output(f"<reminder>Earlier we saw a {colour} shape. Now: {ex.meta['question']}</reminder>\n{gold}")
    v = check(invented, "stop", False, ex, task, [], FilterConfig())
    assert v.reasons == ["grounding"] and colour in v.details["grounding"]
    later = [{"round": 99, "question": "is the purple hexagon spinning?", "answer": "spinning slowly"}]
    future = parse_output(
        f"<reminder>Now: {ex.meta['question']} Later: is the purple hexagon spinning?</reminder>\n{gold}"
    )
    assert "future" in check(future, "stop", False, ex, task, later, FilterConfig()).reasons


# ------------------------------------------------------------------------------------------------- teach
def test_teach_exports_with_provenance_and_a_report(tmp_path, dialogs):
    with FakeOpenAI(responder=good_teacher(dialogs)) as srv:
        res = teach(dialogs, build_task("dialog"), tcfg(srv, tmp_path), tmp_path / "out")
    assert res.counts["accepted"] == len(dialogs), res.counts
    ex = res.examples[0]
    assert ex.messages[:-1] == dialogs[0].prompt_messages() and ex.target == dialogs[0].target
    content = ex.messages[-1]["content"]
    assert content.startswith("<reminder>") and content.endswith(f"</reminder>\n{dialogs[0].answer_text()}")
    prov = ex.meta["teacher"]
    assert prov["model"] == "teacher" and prov["template"].startswith("reminder-v1+") and len(prov["key"]) == 64
    back = load_jsonl(tmp_path / "out" / "data.jsonl")
    assert [e.messages for e in back] == [e.messages for e in res.examples]
    md = (tmp_path / "out" / "teach_report.md").read_text()
    assert "| agreement | 0 |" in md and f"{len(dialogs)} of {len(dialogs)} outputs accepted" in md
    assert (tmp_path / "out" / "teach_report.html").read_text().startswith("<!doctype html>")


def test_faulty_server_rejections_are_counted_and_shown(tmp_path, dialogs):
    respond = good_teacher(dialogs)
    bad = {0: "missing_close", 1: "length", 2: "wrong", 3: "preamble"}
    index = {context_of(ex)["conversation"]: i for i, ex in enumerate(dialogs)}

    def responder(body):
        text, _ = respond(body)
        kind = bad.get(index[conversation_of(body)])
        if kind == "missing_close":
            return text.replace("</reminder>", ""), "stop"
        if kind == "length":
            return text[: len(text) // 2], "length"
        if kind == "wrong":
            return text.rsplit("\n", 1)[0] + "\nmaybe purple", "stop"
        if kind == "preamble":
            return "Okay, here's the response with the requested format:\n\n" + text, "stop"
        return text, "stop"

    faults = {4: "429", 5: "500", 6: "hang", 7: "malformed"}
    script = lambda body, n: faults.get(index[conversation_of(body)]) if n == 0 else None  # noqa: E731
    with FakeOpenAI(responder=responder, script=script, retry_after=0.3, hang_s=4) as srv:
        res = teach(dialogs, build_task("dialog"), tcfg(srv, tmp_path, on_reject="drop"), tmp_path / "out")
    c = res.counts
    assert c["rejected"] == 4 and len(res.examples) == len(dialogs) - 4
    assert c["failed_by_check"]["format"] >= 2 and c["failed_by_check"]["finish"] == 1
    assert c["failed_by_check"]["agreement"] >= 2 and res.summary.retries == 4 and res.summary.failed == 0
    md = (tmp_path / "out" / "teach_report.md").read_text()
    assert "Rejected by format" in md and "maybe purple" in md and "Okay, here's the response" in md


def _teach_cli(data: Path, out: Path, srv: FakeOpenAI, cache: Path, *extra: str) -> list[str]:
    return [
        str(data),
        "--backend",
        "openai",
        "--base-url",
        srv.url,
        "--model",
        "teacher",
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--concurrency",
        "2",
        "--set",
        "timeout=2",
        *extra,
    ]


def test_temperature_or_template_change_reasks_but_a_filter_change_does_not(tmp_path, dialogs, dialog_file):
    with FakeOpenAI(responder=good_teacher(dialogs)) as srv:
        cache = tmp_path / "cache.jsonl"
        assert main(["teach", *_teach_cli(dialog_file, tmp_path / "a", srv, cache)]) == 0
        n = len(srv.log)
        assert n == len(dialogs)
        assert main(["teach", *_teach_cli(dialog_file, tmp_path / "b", srv, cache, "--filter", "min_words=40")]) == 0
        assert len(srv.log) == n  # re-filtering is free
        assert load_jsonl(tmp_path / "b" / "data.jsonl") != load_jsonl(tmp_path / "a" / "data.jsonl")
        assert main(["teach", *_teach_cli(dialog_file, tmp_path / "c", srv, cache, "--set", "temperature=0.7")]) == 0
        assert len(srv.log) == 2 * n
        own = tmp_path / "edited.j2"
        own.write_text(load_template("reminder").source.replace("one to three short sentences", "two sentences"))
        assert main(["teach", *_teach_cli(dialog_file, tmp_path / "d", srv, cache, "--prompt", str(own))]) == 0
        assert len(srv.log) == 3 * n
        assert main(["teach", *_teach_cli(dialog_file, tmp_path / "e", srv, cache, "--filter", "nope=1")]) == 2


def test_kill_9_then_rerun_gives_the_same_export_and_asks_each_key_once(tmp_path, dialogs, dialog_file):
    def run_to_end(out: Path, cache: Path, srv: FakeOpenAI) -> bytes:
        assert main(["teach", *_teach_cli(dialog_file, out, srv, cache)]) == 0
        return (out / "data.jsonl").read_bytes()

    script = lambda body, n: "500" if n == 0 and "how many" in conversation_of(body).splitlines()[-1] else None  # noqa: E731
    with FakeOpenAI(responder=good_teacher(dialogs), script=script, latency=0.15) as srv:
        whole = run_to_end(tmp_path / "whole", tmp_path / "whole.jsonl", srv)
        retried = sum(e["status"] == 500 for e in srv.log)
        srv.log.clear()
        srv.seen.clear()
        cache = tmp_path / "cache.jsonl"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlmtune", "teach", *_teach_cli(dialog_file, tmp_path / "x", srv, cache)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not cache.exists() or len(cache.read_bytes().splitlines()) < 6):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines_at_kill = len(cache.read_bytes().splitlines())
        assert 6 <= lines_at_kill < len(dialogs), "the run was not interrupted in the middle"
        first = list(srv.log)
        again = run_to_end(tmp_path / "resumed", cache, srv)
    assert again == whole  # byte-identical export
    second = srv.log[len(first) :]
    ok_first = {e["body_key"] for e in first if e["status"] == 200}
    asked_again = {e["body_key"] for e in second} & ok_first
    assert len(asked_again) <= 2  # at most the requests in flight at the kill (concurrency 2) are asked again
    answered = [e["body_key"] for e in srv.log if e["status"] == 200]
    assert len(set(answered)) == len(dialogs) and len(answered) <= len(dialogs) + 2
    errors = [e for e in srv.log if e["status"] == 500]
    assert len(errors) <= retried and retried >= 1  # each scripted 500 once per key, then the retry


def test_local_backend_caches_and_resumes(tmp_path, dialogs, micro_model_dir, monkeypatch):
    cfg = TeachConfig(
        target="reminder+gold",
        backend="local",
        model=str(micro_model_dir),
        max_tokens=6,
        batch_size=8,
        cache=str(tmp_path / "local.jsonl"),
    )
    task = build_task("dialog")
    first = teach(dialogs[:10], task, cfg, tmp_path / "a")
    assert first.summary.sent == 10 and first.model_id.startswith("local:")
    assert all(j.response.finish_reason in ("stop", "length") for j in first.judged)
    import vlmtune.infer.generate as gen

    monkeypatch.setattr(gen, "generate", lambda *a, **k: pytest.fail("a cached request was generated again"))
    second = teach(dialogs[:10], task, cfg, tmp_path / "b")
    assert second.summary.sent == 0 and second.summary.cached == 10
    assert (tmp_path / "a" / "data.jsonl").read_bytes() == (tmp_path / "b" / "data.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="greedily"):
        teach(dialogs[:2], task, TeachConfig(**{**cfg.__dict__, "temperature": 0.5}))


def test_a_recipes_teach_section_writes_the_train_split(tmp_path, monkeypatch):
    """The pipeline's data stage runs the teacher on the train split only; data/train.jsonl holds what is trained on."""
    from vlmtune.config import load_config
    from vlmtune.pipeline import check_recipe, setup_data
    from vlmtune.rundir import open_run

    monkeypatch.setattr("vlmtune.pipeline.resolve_model", lambda cfg: None)  # the model is not needed here
    monkeypatch.setattr("vlmtune.pipeline.check_loadable", lambda ref: None)
    with FakeOpenAI(
        responder=lambda body: (
            f"<reminder>Now: {conversation_of(body).splitlines()[-1][3:]}</reminder>\nmaybe",
            "stop",
        )
    ) as srv:
        cfg = load_config(
            ROOT / "recipes" / "shapes_dialog_teacher.yaml",
            [
                f"output_dir={tmp_path}",
                "data.n=24",
                "teach.backend=openai",
                f"teach.base_url={srv.url}",
                "teach.model=fake",
                f"teach.cache={tmp_path / 'cache.jsonl'}",
                "teach.target=reminder+teacher",
                "teach.filters={skip: [agreement]}",
            ],
        )
        task = check_recipe(cfg)
        with open_run(cfg, resume=False, overwrite=False) as run:
            splits, _ = setup_data(cfg, run, task)
        assert len(srv.log) == len(splits["train"])  # the train split only
    train = load_jsonl(cfg.run_dir / "data" / "train.jsonl")
    assert [e.messages for e in train] == [e.messages for e in splits["train"]]
    accepted = [e for e in train if e.meta["teacher"]["accepted"]]
    assert accepted and all(
        e.messages[-1]["content"].startswith("<reminder>Now: ") and e.messages[-1]["content"].endswith("\nmaybe")
        for e in accepted
    )
    # rejected ones (here: the same output for another dialogue's identical question) keep their gold target
    assert all(
        e.messages[-1]["content"] == e.target["answer"] and e.meta["teacher"]["rejected"]
        for e in train
        if not e.meta["teacher"]["accepted"]
    )
    assert all(not e.messages[-1]["content"].startswith("<reminder>") for e in splits["test"])
    assert (cfg.run_dir / "teacher" / "teach_report.html").is_file()
    with pytest.raises(ConfigError, match="teach.filters"):
        check_recipe(load_config(ROOT / "recipes" / "shapes_dialog_teacher.yaml", ["teach.filters={skip: [nope]}"]))
