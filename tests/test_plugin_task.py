"""A task vlmtune does not ship (tests/plugins/parity.py), registered as a plugin, through run, eval, score and
compare: its options reach every verb and its own report section appears in report.md and report.html."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins import parity
from vlmtune.cli import main
from vlmtune.registry import TASKS

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"even": "pair", "odd": "impair"}
TASK_OPTIONS = ["--task-option", "even=pair", "--task-option", "odd=impair"]


@pytest.fixture
def parity_task():
    """'parity' registered by name -> "module:attribute" (the registry imports it on first use), for this test only:
    the registry is process-wide, so its state is put back afterwards."""
    saved = dict(TASKS._entries), dict(TASKS._loaded), TASKS._external_done
    TASKS.register("parity", "tests.plugins.parity:ParityTask")
    yield
    TASKS._entries, TASKS._loaded, TASKS._external_done = saved


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check_task_section(report_dir: Path, runs: list[tuple[str, list[dict]]]) -> None:
    """The parity section is in both documents, with answer counts recomputed here from the predictions."""
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert f"## {parity.SECTION_TITLE}" in md and f"<h2>{parity.SECTION_TITLE}</h2>" in html
    assert "| run | answered 'pair' | answered 'impair' | unreadable |" in md  # the task's options reached it
    for label, rows in runs:
        said = [r["parsed"] if r["parse_ok"] else None for r in rows]
        counts = [said.count("pair"), said.count("impair"), said.count(None)]
        assert sum(counts) == len(rows)
        assert f"| {label} | {counts[0]} | {counts[1]} | {counts[2]} |" in md
        assert f"<tr><td>{label}</td><td>{counts[0]}</td><td>{counts[1]}</td><td>{counts[2]}</td></tr>" in html
    gold = [r["target"] for r in runs[0][1]]
    assert f"{gold.count('pair')} × `pair`, {gold.count('impair')} × `impair`" in md
    assert f"{gold.count('pair')} × <code>pair</code>" in html
    assert (report_dir / "plots" / "parity_answers.png").read_bytes().startswith(b"\x89PNG")
    assert "![parity_answers](plots/parity_answers.png)" in md
    assert 'alt="parity_answers" src="data:image/png;base64,' in html
    sections = json.loads((report_dir / "comparison.json").read_text())["task_sections"]
    assert [s["title"] for s in sections] == [parity.SECTION_TITLE]


def test_a_plugin_task_runs_through_run_eval_score_and_compare(tmp_path, micro_model_dir, parity_task, capsys):
    from vlmtune.data.synth import synthesize

    counting = synthesize("count", 64, tmp_path / "shapes", seed=1)
    data = counting.parent / "parity.jsonl"  # next to the images its records point at
    data.write_text("".join(json.dumps(r) + "\n" for r in parity.records(_rows(counting), OPTIONS)))

    # run: the recipe names the task and its options; nothing else tells vlmtune about it
    assert (
        main(
            [
                "run",
                str(ROOT / "recipes" / "quickstart.yaml"),
                f"output_dir={tmp_path}",
                "name=parity",
                f"model.name={micro_model_dir}",
                "data.source=files",
                f"data.path={data}",
                "data.task=parity",
                "data.task_options={even: pair, odd: impair}",
                "train.max_steps=4",
                "train.batch_size=8",
                "train.logging_steps=1",
                "eval.n_boot=200",
                "eval.max_new_tokens=4",
                "-q",
            ]
        )
        == 0
    )
    run = tmp_path / "parity"
    for f in (
        "data/test.jsonl",
        "adapter/adapter_config.json",
        "zero_shot/predictions.jsonl",
        "finetuned/metrics.json",
        "report.md",
        "report.html",
        "comparison.json",
        "plots/metrics.png",
        "plots/loss.png",
    ):
        assert (run / f).is_file(), f
    test_ids = [r["id"] for r in _rows(run / "data/test.jsonl")]
    zero_shot, finetuned = _rows(run / "zero_shot/predictions.jsonl"), _rows(run / "finetuned/predictions.jsonl")
    for name, rows in (("zero_shot", zero_shot), ("finetuned", finetuned)):
        m = json.loads((run / name / "metrics.json").read_text())
        assert m["task"] == "parity" and m["task_options"] == OPTIONS
        assert [r["id"] for r in rows] == test_ids and {r["target"] for r in rows} <= {"pair", "impair"}
        for r in rows:  # the task's own parsing and scoring made these rows
            assert r["parse_ok"] == (r["parsed"] in ("pair", "impair"))
            assert r["correct"] == (r["parse_ok"] and r["parsed"] == r["target"])
        assert m["metrics"]["accuracy"]["value"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
        assert m["metrics"]["parse_failures"] == sum(not r["parse_ok"] for r in rows)
    _check_task_section(run, [("zero-shot", zero_shot), ("fine-tuned", finetuned)])

    # eval: the same model again, with the options given on the command line
    assert (
        main(
            [
                "eval",
                "--model",
                str(micro_model_dir),
                "--adapter",
                str(run / "adapter"),
                "--data",
                str(run / "data/test.jsonl"),
                "--out",
                str(tmp_path / "ev"),
                "--max-new-tokens",
                "4",
                "-q",
                *TASK_OPTIONS,
            ]
        )
        == 0
    )
    again = _rows(tmp_path / "ev/predictions.jsonl")
    assert [r["prediction"] for r in again] == [r["prediction"] for r in finetuned]  # greedy: deterministic
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["task_options"] == OPTIONS

    # compare: eval's directory against the run's zero-shot one (same settings, so a fair comparison)
    assert main(["compare", str(run / "zero_shot"), str(tmp_path / "ev"), "--out", str(tmp_path / "cmp")]) == 0
    _check_task_section(tmp_path / "cmp", [("zero-shot", zero_shot), ("fine-tuned", again)])

    # score: the fine-tuned answers again, then two other systems' answers, without a model
    assert (
        main(
            [
                "score",
                "--task",
                "parity",
                "--data",
                str(run / "data/test.jsonl"),
                "--predictions",
                str(run / "finetuned/predictions.jsonl"),
                "--out",
                str(tmp_path / "sc"),
                "-q",
                *TASK_OPTIONS,
            ]
        )
        == 0
    )
    scored = json.loads((tmp_path / "sc/metrics.json").read_text())
    assert scored["task"] == "parity" and scored["task_options"] == OPTIONS
    assert [r["parsed"] for r in _rows(tmp_path / "sc/predictions.jsonl")] == [r["parsed"] for r in finetuned]
    assert scored["metrics"]["accuracy"]["value"] == pytest.approx(
        json.loads((run / "finetuned/metrics.json").read_text())["metrics"]["accuracy"]["value"]
    )
    gold = [r["target"] for r in _rows(run / "data/test.jsonl")]
    other = {"pair": "impair", "impair": "pair"}
    systems = {
        "always_pair": ["It is pair."] * len(gold),  # a majority-class guesser
        "mostly_right": [other[gold[0]], "no idea"] + gold[2:],
    }  # one wrong word, one unreadable answer
    for name, answers in systems.items():
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": i, "prediction": a}) + "\n" for i, a in zip(test_ids, answers))
        )
        assert (
            main(
                [
                    "score",
                    "--task",
                    "parity",
                    "--data",
                    str(run / "data/test.jsonl"),
                    "--predictions",
                    str(tmp_path / f"{name}.jsonl"),
                    "--out",
                    str(tmp_path / name),
                    "-q",
                    *TASK_OPTIONS,
                ]
            )
            == 0
        )
    accuracy = {
        name: json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]["accuracy"]["value"]
        for name in systems
    }
    assert accuracy == {
        "always_pair": pytest.approx(gold.count("pair") / len(gold)),
        "mostly_right": pytest.approx((len(gold) - 2) / len(gold)),
    }

    # compare the two systems in a fresh process that finds the task only through VLMTUNE_PLUGINS
    env = {
        **os.environ,
        "VLMTUNE_PLUGINS": "tests.plugins.parity",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmtune",
            "compare",
            str(tmp_path / "always_pair"),
            str(tmp_path / "mostly_right"),
            "--out",
            str(tmp_path / "cmp2"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"mostly_right  accuracy {accuracy['mostly_right']:.3f}" in proc.stdout
    _check_task_section(tmp_path / "cmp2", [(name, _rows(tmp_path / name / "predictions.jsonl")) for name in systems])


def test_a_task_that_cannot_be_built_leaves_a_note_not_a_gap(tmp_path):
    """Comparing runs of a task this process does not know still writes the generic report, and says what is
    missing from it."""
    from vlmtune.report import compare_runs

    rows = [
        {"id": str(i), "prediction": "x", "parsed": "x", "parse_ok": True, "target": "x", "correct": i % 2 == 0}
        for i in range(6)
    ]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp_path / name / "metrics.json").write_text(
            json.dumps({"task": "no_such_task", "label": name, "metrics": {}})
        )
        (tmp_path / name / "fingerprint.json").write_text(json.dumps({"task": "no_such_task"}))
    compare_runs(tmp_path / "a", tmp_path / "b", tmp_path / "r", n_boot=100)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Note: task 'no_such_task' could not be built here" in md and "VLMTUNE_PLUGINS" in md
    assert "no_such_task" in json.loads((tmp_path / "r" / "comparison.json").read_text())["notes"][0]
