"""Test helpers shared by several test modules (not part of the package)."""

from __future__ import annotations

from transformers import TrainerCallback


class StopAtStep(TrainerCallback):
    """Stop after `step` optimizer steps (after that step's checkpoint): simulates an interrupted run."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control
