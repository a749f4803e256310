"""The console a user sees: one bar at a time, log lines (no carriage returns) when stderr is not a terminal,
samples/s in the training postfix, known warnings silenced, -q; and the early errors of validate, predict, compare."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlmtune.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, model_dir, name, *extra):
    return [
        "run",
        str(ROOT / "recipes" / "quickstart.yaml"),
        f"output_dir={tmp_path}",
        f"name={name}",
        f"model.name={model_dir}",
        "data.n=64",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.eval_steps=2",
        "train.logging_steps=1",
        "eval.n_boot=100",
        "eval.max_new_tokens=4",
        *extra,
    ]


def test_log_friendly_progress_when_stderr_is_not_a_terminal(tmp_path, micro_model_dir, capsys, monkeypatch):
    from vlmtune import logs

    monkeypatch.setattr(logs, "PROGRESS_EVERY_S", 0.0)  # a line per update, so the short run shows some
    assert main(_run(tmp_path, micro_model_dir, "lines")) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "\r" not in err and "\x1b[" not in err
    train_lines = [l for l in err.splitlines() if l.startswith("[train] ") and "/4 (" in l]
    assert train_lines and train_lines[-1].startswith("[train] 4/4 (100%)"), err
    assert "samples/s=" in train_lines[-1] and "loss=" in train_lines[-1] and "lr=" in train_lines[-1]
    validations = [l for l in err.splitlines() if ": validation " in l]
    assert len(validations) == 2 and all("loss" in l and "accuracy" in l for l in validations), (
        validations
    )  # one line each
    assert "FutureWarning" not in err and "requires torchvision" not in err
    assert "{'loss'" not in err + captured.out  # no raw Trainer dicts
    assert "McNemar" in captured.out


def test_one_bar_at_a_time_on_a_terminal(tmp_path, micro_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(_run(tmp_path, micro_model_dir, "tty")) == 0
    err = capsys.readouterr().err
    assert "train:" in err and "samples/s=" in err  # the tqdm bar and its postfix
    assert "\x1b[A" not in err  # no nested bar moving the cursor up
    assert "validate:" not in err  # validation inside training draws no second bar


def test_quiet_leaves_the_summary_only(tmp_path, micro_model_dir, capsys):
    assert main(_run(tmp_path, micro_model_dir, "quiet", "-q")) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "McNemar" in captured.out


def test_a_training_job_says_what_it_is(tmp_path, micro_model_dir, count_data, log_lines):
    from vlmtune.config import ModelConfig, TrainConfig
    from vlmtune.models.load import ModelRef
    from vlmtune.train.trainer import train

    train(
        ModelRef.of(ModelConfig(name=str(micro_model_dir))),
        count_data[:8],
        [],
        tmp_path,
        TrainConfig(method="full", max_steps=1, batch_size=4, report_to=[]),
        stage="tiny",
    )
    assert any(m.startswith("[tiny] full:") for m in log_lines) and not any(m.startswith("[train]") for m in log_lines)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.optim=adamw_torhc", "'train.optim' is 'adamw_torhc' (did you mean adamw_torch?)"),
        ("train.lr_scheduler=cosin", "'train.lr_scheduler' is 'cosin' (did you mean cosine?)"),
        ("train.report_to=[tensorbord]", "'train.report_to' is 'tensorbord' (did you mean tensorboard?)"),
    ],
)
def test_validate_checks_what_transformers_accepts(override, needle, capsys):
    assert main(["validate", str(ROOT / "recipes" / "quickstart.yaml"), override]) == 2
    assert needle in capsys.readouterr().err


def test_validate_checks_the_logger_is_installed(capsys, monkeypatch):
    from vlmtune.train import trainer

    monkeypatch.setitem(trainer.LOGGER_PACKAGES, "wandb", "a_package_that_is_not_installed")
    assert main(["validate", str(ROOT / "recipes" / "quickstart.yaml"), "train.report_to=[wandb]"]) == 2
    assert "pip install a_package_that_is_not_installed" in capsys.readouterr().err


def test_predict_names_a_missing_image_before_loading(tmp_path, micro_model_dir, capsys, log_lines):
    missing = tmp_path / "nope.png"
    assert main(["predict", "--model", str(micro_model_dir), "--image", str(missing), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not any(m.startswith("[model]") for m in log_lines)  # it stopped before loading the model


def test_compare_refuses_an_evaluation_with_itself(tmp_path, capsys):
    import shutil

    from vlmtune.data.example import atomic_write_json

    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "predictions.jsonl").write_text('{"id": "a", "prediction": "1", "target": 1, "correct": true}\n')
    atomic_write_json(ev / "metrics.json", {"task": "count", "label": "x", "n": 1, "metrics": {}})
    atomic_write_json(ev / "fingerprint.json", {"model": "m"})
    shutil.copytree(ev, tmp_path / "copy")
    for other in (ev, tmp_path / "copy"):
        assert main(["compare", str(ev), str(other), "--out", str(tmp_path / "cmp")]) == 2
        assert "are the same evaluation" in capsys.readouterr().err


def test_a_librarys_bare_logging_call_does_not_print_every_line_twice():
    """A library calling `logging.info(...)` makes logging.basicConfig() give the root logger a stream handler;
    vlmtune's lines would then print twice ("[x] ..." and "INFO:vlmtune...:[x] ..."). Its own process: pytest's
    handlers on the root logger would hide the effect."""
    import subprocess

    code = (
        "import logging; from vlmtune import logs; logs.setup(); "
        "logging.info('a library speaks'); logging.getLogger('vlmtune.x').info('[x] once')"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert err.count("[x] once") == 1, err
