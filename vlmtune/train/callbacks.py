"""Trainer callbacks: the training console (one progress bar, readable validation lines) and the restore of the
running loss sums a resumed run needs (saved beside each checkpoint by vlmtune)."""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import TrainerCallback

from vlmtune.logs import make_bar, release_bar

log = logging.getLogger(__name__)


class ConsoleCallback(TrainerCallback):
    """The training console: one progress bar on stderr (loss, learning rate and samples/s in its postfix) and one
    readable log line per validation; replaces transformers' printer and progress callbacks, which print raw dicts
    to stdout. samples/s counts the optimizer steps' own time (validation pauses are left out)."""

    def __init__(self, stage: str = "train") -> None:
        self.stage = stage
        self.bar: Any = None
        self.step_started = 0.0
        self.samples = 0
        self.seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = make_bar(total=state.max_steps, initial=state.global_step, desc=self.stage)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.monotonic() - self.step_started
        self.samples += args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.bar is not None and "loss" in logs:
            rate = self.samples / self.seconds if self.seconds else 0.0
            self.bar.set_postfix(
                loss=f"{logs['loss']:.4g}",
                lr=f"{logs.get('learning_rate', 0):.2g}",
                **{"samples/s": f"{rate:.1f}"},
                refresh=False,
            )
            self.samples, self.seconds = 0, 0.0
        scores = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k not in _EVAL_BOOKKEEPING}
        if scores and state.is_world_process_zero:
            text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
            log.info(f"[{self.stage}] step {state.global_step}, epoch {state.epoch or 0:.2f}: validation {text}")

    def on_train_end(self, args, state, control, **kwargs):
        release_bar(self.bar)
        self.bar = None


# Trainer log keys that are timing bookkeeping, not validation results.
_EVAL_BOOKKEEPING = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


# In checkpoint-N/: the running loss sums that transformers keeps only in memory. Restored on resume, so the
# losses logged after it and the final train_loss are those of the uninterrupted run (transformers would report
# train_loss over the resumed steps only, and a first logged loss over the steps since the resume).
LOSS_STATE = "vlmtune-loss-state.json"
LOSS_ATTRS = ("_total_loss_scalar", "_tr_loss", "_globalstep_last_logged", "_initial_global_step")


class RestoreLossState(TrainerCallback):
    """Puts a checkpoint's LOSS_STATE back into the trainer when training (re)starts from it."""

    def __init__(self, trainer: Any, state: dict):  # a VlmTrainer (vlmtune.train.trainer)
        self.trainer, self.state = trainer, state

    def on_train_begin(self, args, state, control, **kwargs):
        t, s = self.trainer, self.state
        if not all(hasattr(t, a) for a in LOSS_ATTRS):
            return
        t._total_loss_scalar = float(s["total_loss"])
        t._tr_loss.fill_(float(s["unlogged_loss"]))
        t._globalstep_last_logged = int(s["last_logged_step"])
        t._initial_global_step = int(s["first_step"])
