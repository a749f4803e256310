"""The run directory as a record that nothing corrupts: the run lock, --overwrite that never deletes first,
--resume's config check and config_history, `vlmtune train` into existing runs, checkpoints a kill cannot
break, no pickle in exports, options and overrides in any order, stdout for results only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmtune.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "quickstart.yaml")


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }


def _args(tmp_path, model, *extra, name="r"):
    return [
        "run",
        RECIPE,
        f"output_dir={tmp_path / 'runs'}",
        f"name={name}",
        f"model.name={model}",
        "data.n=32",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.save_steps=1",
        "eval.n_boot=100",
        "eval.max_new_tokens=4",
        "train.val_max_examples=4",
        "-q",
        *extra,
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def good_run(micro_model_dir, tmp_path_factory):
    """One finished run, copied fresh into each test that changes it."""
    base = tmp_path_factory.mktemp("good")
    assert main(_args(base, micro_model_dir)) == 0
    return base / "runs" / "r"


@pytest.fixture
def run_copy(good_run, tmp_path):
    dst = tmp_path / "runs" / "r"
    shutil.copytree(good_run, dst)
    # reports name their evaluation folders by absolute path; the copy is a run of its own
    return dst


# ------------------------------------------------------------------------------------------- --overwrite
def test_overwrite_never_deletes_the_earlier_run_before_the_new_one_is_ready(
    run_copy, tmp_path, micro_model_dir, capsys
):
    from PIL import Image

    before = snapshot(run_copy)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "task": "count", "messages": [{"role": "user", "content": "x"}], "target": 1}\n{no\n')
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "photo.jpg", quality=90)
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # a truncated JPEG: opens, does not decode
    cut = tmp_path / "cut.jsonl"
    cut.write_text(
        json.dumps(
            {
                "id": "c",
                "task": "count",
                "images": ["cut.jpg"],
                "target": 1,
                "messages": [{"role": "user", "content": "<image>\nHow many?"}, {"role": "assistant", "content": "1"}],
            }
        )
        + "\n"
    )
    failing = {
        "a missing data file": ["data.source=files", f"data.path={tmp_path / 'nope.jsonl'}"],
        "an invalid data file": ["data.source=files", f"data.path={bad}"],
        "a truncated image": ["data.source=files", f"data.path={cut}"],
        "a model that is not there": [f"model.name={tmp_path / 'no-model'}"],
        "a bad key": ["train.lr=-1"],
    }
    for why, extra in failing.items():
        assert main([*_args(tmp_path, micro_model_dir), "--overwrite", *extra]) == 2, why
        err = capsys.readouterr().err
        assert "vlmtune: error:" in err and "Traceback" not in err, (why, err)
        assert snapshot(run_copy) == before, f"{why}: the earlier run changed"
        assert sorted(p.name for p in run_copy.parent.iterdir()) == [".r.lock", "r"], why  # no staging left
    assert main([*_args(tmp_path, micro_model_dir), "--overwrite", "data.source=files", f"data.path={cut}"]) == 2
    err = capsys.readouterr().err
    assert f"{cut}:1" in err and "cannot be decoded" in err and "images[0]" in err
    # A good --overwrite replaces the run (here: other data), and leaves nothing beside it.
    assert main([*_args(tmp_path, micro_model_dir), "--overwrite", "data.n=40"]) == 0
    assert "n: 40" in (run_copy / "config.yaml").read_text()
    assert sorted(p.name for p in run_copy.parent.iterdir()) == [".r.lock", "r"]


def test_a_run_that_fails_validation_leaves_nothing_so_the_retry_works(tmp_path, micro_model_dir):
    bad = tmp_path / "d.jsonl"
    bad.write_text("{oops\n")
    assert main([*_args(tmp_path, micro_model_dir), "data.source=files", f"data.path={bad}"]) == 2
    assert not (tmp_path / "runs" / "r").exists()  # no config.yaml left to refuse the retry
    assert main([*_args(tmp_path, micro_model_dir), "train.max_steps=1"]) == 0


# ------------------------------------------------------------------------------------------------ lock
def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run's lock (as a running `vlmtune run` does) until it is killed."""
    code = (
        "import sys, time; from pathlib import Path; from vlmtune.rundir import RunLock, _sibling; "
        f"d = Path({str(run_dir)!r}); d.parent.mkdir(parents=True, exist_ok=True); "
        "sys.argv = ['vlmtune', 'run', 'recipes/quickstart.yaml']; RunLock(_sibling(d, 'lock'), d).acquire(); "
        "print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_run_refuses_writers_names_the_holder_and_lets_readers_in(run_copy, tmp_path, micro_model_dir, capsys):
    before = snapshot(run_copy)
    holder = _hold_lock(run_copy)
    try:
        for flags in ([], ["--overwrite"], ["--resume"]):
            assert main([*_args(tmp_path, micro_model_dir), *flags]) == 2
            err = capsys.readouterr().err
            assert f"is in use by process {holder.pid}" in err and "vlmtune run recipes/quickstart.yaml" in err, err
        assert main(["train", *_args(tmp_path, micro_model_dir)[1:], "--resume"]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
        assert snapshot(run_copy) == before
        # Readers never take the lock.
        assert (
            main(["compare", str(run_copy / "zero_shot"), str(run_copy / "finetuned"), "--out", str(tmp_path / "cmp")])
            == 0
        )
        assert (
            main(
                [
                    "score",
                    "--task",
                    "count",
                    "--data",
                    str(run_copy / "data/test.jsonl"),
                    "--predictions",
                    str(run_copy / "finetuned/predictions.jsonl"),
                    "--out",
                    str(tmp_path / "sc"),
                ]
            )
            == 0
        )
        assert main(["export", str(run_copy), "--out", str(tmp_path / "exp")]) == 0
        # Writing an evaluation into the locked run is a writer.
        assert (
            main(
                [
                    "score",
                    "--task",
                    "count",
                    "--data",
                    str(run_copy / "data/test.jsonl"),
                    "--predictions",
                    str(run_copy / "finetuned/predictions.jsonl"),
                    "--out",
                    str(run_copy / "rescored"),
                ]
            )
            == 2
        )
        assert f"process {holder.pid}" in capsys.readouterr().err and not (run_copy / "rescored").exists()
    finally:
        holder.kill()  # kill -9: the kernel releases the lock; the lock file stays behind, stale
        holder.wait()
    assert main([*_args(tmp_path, micro_model_dir), "--resume"]) == 0  # a dead holder's lock is no lock


def test_two_runs_started_together_one_runs_one_is_refused(tmp_path, micro_model_dir):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vlmtune", *_args(tmp_path, micro_model_dir, *extra)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--overwrite"])
    ]
    results = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # both ran one after the other, or one was refused
    if codes == [0, 2]:
        err = next(e for rc, e in results if rc == 2)
        # the holder is named by its PID, or, when the refused run came within the moment between the other's
        # lock and its PID record, as "another process (it is starting ...)"
        assert ("is in use by process" in err or "is in use by another process" in err) and "Traceback" not in err
    run = tmp_path / "runs" / "r"
    assert (run / "report.html").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == [".r.lock", "r"]


# ---------------------------------------------------------------------------------------------- resume
def test_resume_refuses_changes_that_finished_stages_depend_on(run_copy, tmp_path, micro_model_dir, capsys):
    before = snapshot(run_copy)
    for change, stage in (
        ("train.max_steps=3", "the finished training"),
        ("eval.max_new_tokens=5", "zero-shot"),
        ("data.n=40", "data splits"),
        ("model.dtype=float32", "zero-shot"),
    ):
        assert main([*_args(tmp_path, micro_model_dir), "--resume", change]) == 2
        err = capsys.readouterr().err
        key = change.split("=")[0]
        assert key in err and stage in err and "--overwrite" in err and "name=" in err, err
    assert snapshot(run_copy) == before
    # Settings no result depends on may change.
    assert main([*_args(tmp_path, micro_model_dir), "--resume", "train.report_to=[]"]) == 0


def test_resume_allows_and_records_changes_to_unfinished_stages(run_copy, tmp_path, micro_model_dir, capsys):
    # The state a kill during training leaves: checkpoints, no finished training, no later stages.
    for done in ("adapter", "finetuned", "train_history.json", "report.md", "report.html", "comparison.json"):
        p = run_copy / done
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(run_copy / "zero_shot")
    assert main([*_args(tmp_path, micro_model_dir), "--resume", "train.max_steps=3", "eval.max_new_tokens=5"]) == 0
    history = json.loads((run_copy / "config_history.json").read_text())
    assert history[-1]["changed"] == {"eval.max_new_tokens": [4, 5], "train.max_steps": [2, 3]}
    assert "max_steps: 3" in (run_copy / "config.yaml").read_text()
    assert max(h["step"] for h in json.loads((run_copy / "train_history.json").read_text())) == 3
    assert (run_copy / "checkpoints" / "checkpoint-3").is_dir()  # continued from checkpoint-2 to the new end
    # A change to how training learns is refused once checkpoints exist, even though training is unfinished.
    for done in ("adapter", "train_history.json"):
        p = run_copy / done
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert (
        main(
            [
                *_args(tmp_path, micro_model_dir),
                "--resume",
                "train.max_steps=3",
                "eval.max_new_tokens=5",
                "train.lr=1e-3",
            ]
        )
        == 2
    )
    assert "the training checkpoints" in capsys.readouterr().err


def test_train_into_an_existing_run_follows_the_run_rules_and_exports(tmp_path, micro_model_dir, capsys):
    args = ["train", *_args(tmp_path, micro_model_dir)[1:]]
    assert main(args) == 0
    run = tmp_path / "runs" / "r"
    assert (run / "config.yaml").is_file() and (run / "data" / "manifest.json").is_file()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "kept the finished training" in capsys.readouterr().out
    assert main([*args, "--resume", "data.n=40"]) == 2  # stale splits and training: refused
    assert "data.n" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "adapter_model.safetensors").is_file()
    assert main([*args, "--overwrite", "train.max_steps=1"]) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    # `run --resume` adds the evaluations to a train-only run.
    assert main([*_args(tmp_path, micro_model_dir, "train.max_steps=1"), "--resume"]) == 0
    assert (run / "report.html").is_file()


# ------------------------------------------------------------------------------------------ checkpoints
def test_resume_skips_incomplete_checkpoints(micro_model_dir, count_data, tmp_path, log_lines):
    import torch
    from safetensors.torch import load_file

    from tests.helpers import StopAtStep
    from vlmtune.config import ModelConfig, TrainConfig
    from vlmtune.models.load import ModelRef
    from vlmtune.train.checkpoints import SENTINEL, is_complete
    from vlmtune.train.trainer import train

    cfg = TrainConfig(epochs=1, max_steps=5, batch_size=4, lr=5e-3, logging_steps=1, save_steps=1, report_to=[], seed=3)
    ref = ModelRef.of(ModelConfig(name=str(micro_model_dir)))
    full = train(ref, count_data[:24], [], tmp_path / "full", cfg)
    cut = train(ref, count_data[:24], [], tmp_path / "cut", cfg, callbacks=[StopAtStep(3)])
    ckpts = tmp_path / "cut" / "checkpoints"
    assert is_complete(ckpts / "checkpoint-3")
    # A kill inside the save of checkpoint-3 (no trainer state, no sentinel) and an empty checkpoint-9.
    (ckpts / "checkpoint-3" / "trainer_state.json").unlink()
    (ckpts / "checkpoint-3" / SENTINEL).unlink()
    (ckpts / "checkpoint-9").mkdir()
    assert cut.steps == 3
    resumed = train(ref, count_data[:24], [], tmp_path / "cut", cfg, resume=True)
    assert resumed.steps == 5
    assert any("checkpoint-9 is incomplete" in m for m in log_lines)
    assert any("checkpoint-3 is incomplete" in m for m in log_lines)
    assert any("resuming from" in m and "checkpoint-2" in m for m in log_lines)
    a, b = (
        load_file(str(full.output_dir / "adapter_model.safetensors")),
        load_file(str(resumed.output_dir / "adapter_model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed from checkpoint-2: not the uninterrupted result"
    assert not (resumed.output_dir / "training_args.bin").exists()  # no pickle in the adapter


def test_exports_carry_no_pickle(run_copy, tmp_path):
    from vlmtune.export import is_pickle

    (run_copy / "adapter" / "training_args.bin").write_bytes(b"\x80\x04K\x01.")  # as older runs had
    for merge in ([], ["--merge"]):
        out = tmp_path / f"exp{len(merge)}"
        assert main(["export", str(run_copy), "--out", str(out), *merge]) == 0
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files and not [p for p in files if is_pickle(p)]
    (run_copy / "adapter" / "extra.pt").write_bytes(b"\x80\x04K\x01.")
    assert main(["export", str(run_copy), "--out", str(tmp_path / "exp9")]) == 2
    assert not (tmp_path / "exp9").exists()


# ------------------------------------------------------------------------------ options, stdout, logs
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "R.yaml", "--overwrite", "name=x"],
        ["run", "R.yaml", "-q", "name=x"],
        ["run", "-q", "R.yaml", "name=x"],
        ["run", "R.yaml", "a.b=1", "--resume", "name=x"],
        ["train", "R.yaml", "--overwrite", "name=x", "-q"],
        ["validate", "R.yaml", "-q", "name=x"],
        ["quickstart", "--resume", "name=x"],
        ["quickstart", "name=x", "-q"],
    ],
)
def test_options_and_overrides_in_any_order(argv):
    from vlmtune.cli import build_parser, parse

    args = parse(build_parser(), argv)
    assert args.overrides[-1] == "name=x"


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "A", "--out", "X", "B"],
        ["compare", "--out", "X", "A", "B", "-q"],
        ["export", "--merge", "SRC", "--out", "X"],
        ["export", "SRC", "--out", "X", "--merge", "-q"],
        ["data", "split", "--out", "X", "P.jsonl", "--seed", "1"],
        ["data", "inspect", "--skip-invalid", "P.jsonl"],
        ["eval", "--data", "D", "-q", "--model", "M"],
        ["score", "-q", "--task", "count", "--data", "D", "--predictions", "P"],
    ],
)
def test_options_in_any_order_on_the_other_verbs(argv):
    from vlmtune.cli import build_parser, parse

    assert callable(parse(build_parser(), argv).fn)


def test_predict_prints_only_the_answer_on_stdout(micro_model_dir, count_data):
    image = count_data[0].images[0]
    cmd = [
        sys.executable,
        "-m",
        "vlmtune",
        "predict",
        "--model",
        str(micro_model_dir),
        "--image",
        image,
        "--prompt",
        "How many red shapes are there?",
        "--max-new-tokens",
        "4",
    ]
    proc = subprocess.run(
        f"{' '.join(map(repr, cmd))} | cat", shell=True, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 1 and "[model]" in proc.stderr, (proc.stdout, proc.stderr[-500:])


def test_building_the_tiny_base_writes_nothing_to_stdout(tmp_path, capfd):
    from vlmtune.build import build_base
    from vlmtune.models.tiny import TinyBaseConfig

    build_base(
        TinyBaseConfig(vision_steps=2, pretrain_examples=16, pretrain_epochs=1, pretrain_batch_size=8), cache=tmp_path
    )
    out, _ = capfd.readouterr()
    assert out == ""


def test_long_log_lines_are_cut_on_the_console_and_whole_in_the_run_log(tmp_path):
    import io
    import logging

    from vlmtune import logs

    console = io.StringIO()
    logs.setup(stream=console)
    handler = logs.add_log_file(tmp_path / "run.log", shown_as="runs/x/run.log")
    try:
        logging.getLogger("vlmtune.test").info("[data] " + "label: 3, " * 1200)
    finally:
        logs.remove_log_file(handler)
        logs.setup()
    line = console.getvalue().rstrip("\n")
    assert len(line) < logs.MAX_LINE + 100 and "whole line in runs/x/run.log" in line
    assert "label: 3, " * 1200 in (tmp_path / "run.log").read_text()


def test_the_dialog_data_line_is_short(tmp_path, log_lines):
    from vlmtune.config import load_config
    from vlmtune.data.prepare import prepare_data

    cfg = load_config(ROOT / "recipes" / "shapes_dialog.yaml", ["data.n=40"])
    prepare_data(cfg, tmp_path)
    lines = [m for m in log_lines if m.startswith("[data] train:")]
    assert lines and max(len(m) for m in lines) < 1000, max(len(m) for m in lines)
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["labels"]
