"""Resume continues where the checkpoint left off: the global step, the learning-rate schedule's position and the
data order all pick up at the checkpoint, and the result is the uninterrupted run's.

Ending with the same adapter is not enough on its own: deterministic training restarted from step 0 ends there
too. So every training step is recorded (the step it is taken at, the learning rate it uses, the token ids of its
batch) by wrapping the real `VlmTrainer.compute_loss`, and the resumed run must take exactly the steps the
interrupted run had left, with the same learning rates and the same batches as the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import StopAtStep
from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.models.load import ModelRef
from vlmtune.train import trainer as trainer_mod
from vlmtune.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def steps(monkeypatch):
    """Each training step the Trainer takes: (global step before it, learning rate, hash of the batch's token ids)."""
    taken: list[tuple[int, float, str]] = []
    real = trainer_mod.VlmTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        if model.training:
            ids = inputs["input_ids"].detach().cpu().numpy().tobytes()
            taken.append(
                (self.state.global_step, self.lr_scheduler.get_last_lr()[0], hashlib.sha256(ids).hexdigest()[:16])
            )
        return real(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_mod.VlmTrainer, "compute_loss", recording)
    return taken


def _cfg(**kw) -> TrainConfig:
    # 12 examples in batches of 4: 3 steps per epoch, 2 epochs. The cut falls inside the second epoch, so the
    # resumed run must reshuffle for epoch 2 as the full run did and skip that epoch's first batch.
    base = dict(
        epochs=2,
        max_steps=6,
        batch_size=4,
        lr=5e-3,
        warmup_steps=2,
        lr_scheduler="linear",
        logging_steps=1,
        save_steps=2,
        report_to=[],
        lora_dropout=0.1,
        seed=5,
    )
    return TrainConfig(**{**base, **kw})


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7, rtol=0) for k in a)


@pytest.mark.parametrize("group_by_length", [True, False], ids=["length-grouped", "shuffled"])
def test_resume_starts_at_the_checkpoint_step_schedule_and_data_order(
    group_by_length, micro_model_dir, count_data, tmp_path, steps, log_lines
):
    ref = ModelRef.of(ModelConfig(name=str(micro_model_dir)))
    train_ex, val_ex = count_data[:12], count_data[12:14]
    cfg = _cfg(group_by_length=group_by_length)
    full = train(ref, train_ex, val_ex, tmp_path / "full", cfg)
    full_steps = list(steps)
    assert [s for s, _, _ in full_steps] == list(range(6)), full_steps
    assert len({lr for _, lr, _ in full_steps}) > 3, "the schedule should move the learning rate every step"
    # Epoch 2 is not epoch 1 again: the data order is reshuffled per epoch.
    assert [h for _, _, h in full_steps[3:]] != [h for _, _, h in full_steps[:3]]

    steps.clear()
    cut = train(ref, train_ex, val_ex, tmp_path / "cut", cfg, callbacks=[StopAtStep(4)])
    assert cut.steps == 4 and steps == full_steps[:4]
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-4").is_dir()

    steps.clear()
    resumed = train(ref, train_ex, val_ex, tmp_path / "cut", cfg, resume=True)
    assert any("resuming from" in m and m.rstrip().endswith("checkpoint-4") for m in log_lines), list(log_lines)
    # Exactly the steps that were left (global step 4 and 5), at the learning rates and with the batches of the
    # uninterrupted run: the step counter, the scheduler and the sampler all continue from the checkpoint.
    assert steps == full_steps[4:], (steps, full_steps)
    assert resumed.steps == 6
    assert _same(_adapter(resumed.output_dir), _adapter(full.output_dir))
    # The history holds each step once, checkpointed steps included.
    logged = [h["step"] for h in resumed.history if "loss" in h]
    assert logged == [1, 2, 3, 4, 5, 6], logged
    assert [h["loss"] for h in resumed.history if "loss" in h] == pytest.approx(
        [h["loss"] for h in full.history if "loss" in h], rel=1e-6
    )


def _run_args(tmp_path, micro_model_dir, *extra):
    return [
        "run",
        str(ROOT / "recipes" / "quickstart.yaml"),
        f"output_dir={tmp_path}",
        "name=r",
        f"model.name={micro_model_dir}",
        "data.n=48",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.save_steps=2",
        "train.logging_steps=1",
        "eval.n_boot=50",
        "eval.max_new_tokens=3",
        "-q",
        *extra,
    ]


def _checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(re.sub(r"\D", "", p.name)) for p in (run / "checkpoints").glob("checkpoint-*"))


def test_vlmtune_run_resume_continues_an_interrupted_training(micro_model_dir, tmp_path, steps):
    """`vlmtune run --resume` on a run whose training stopped after its step-2 checkpoint: the zero-shot
    evaluation is kept, training takes steps 3 and 4 only, and the adapter, predictions and report are those
    of the run that was never interrupted."""
    from vlmtune.cli import main

    assert main(_run_args(tmp_path, micro_model_dir)) == 0
    run = tmp_path / "r"
    assert [s for s, _, _ in steps] == [0, 1, 2, 3]
    full_steps = list(steps)
    assert _checkpoint_steps(run) == [2, 4]
    adapter = _adapter(run / "adapter")
    predictions = (run / "finetuned" / "predictions.jsonl").read_text()
    zero_shot = (run / "zero_shot" / "metrics.json").stat().st_mtime_ns
    # The state a run killed during step 3 leaves: checkpoint-2, no later checkpoint, no adapter, no
    # fine-tuned evaluation, no report.
    import shutil

    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "finetuned")
    for f in ("train_history.json", "report.md", "report.html", "comparison.json"):
        (run / f).unlink()

    steps.clear()
    assert main(_run_args(tmp_path, micro_model_dir, "--resume")) == 0
    assert steps == full_steps[2:], (steps, full_steps)
    assert (run / "zero_shot" / "metrics.json").stat().st_mtime_ns == zero_shot, "the finished zero-shot stage re-ran"
    assert _same(_adapter(run / "adapter"), adapter)
    assert (run / "finetuned" / "predictions.jsonl").read_text() == predictions
    history = json.loads((run / "train_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert (run / "report.md").is_file()
