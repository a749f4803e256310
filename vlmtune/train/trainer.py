"""Fine-tuning on `transformers.Trainer`: LoRA (PEFT) or full, generation-based validation, exact resume.

    result = train(resolve_model(cfg.model), train_examples, val_examples, "runs/q", cfg.train,
                   task=build_task("count"), ecfg=cfg.eval)

Shape of the job: set up (load, attach LoRA, encode data, build Trainer) -> run (Trainer.train,
resuming from the last checkpoint when asked) -> clean up (save adapter + processor + history).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainingArguments

from vlmtune.config import EvalConfig, TrainConfig
from vlmtune.data.example import Example, atomic_write_json
from vlmtune.distributed import is_main_process
from vlmtune.errors import ConfigError
from vlmtune.models.load import ModelRef, module_part
from vlmtune.processing import Model, Processor, tokenizer_of
from vlmtune.tasks.base import Task
from vlmtune.train.callbacks import LOSS_ATTRS, LOSS_STATE, ConsoleCallback, RestoreLossState  # noqa: F401
from vlmtune.train.checkpoints import last_complete_checkpoint, mark_complete
from vlmtune.train.collate import Collator, EncodedDataset, EncodeSettings, padding_fraction
from vlmtune.train.loss import Unsupported, answer_only_loss
from vlmtune.train.sampling import EpochLengthSampler, length_grouped_indices

log = logging.getLogger(__name__)


@dataclass
class ConnectorSetup:
    """Train a memory connector (vlmtune.models.connector) on the frozen model instead of LoRA/full fine-tuning:
    its settings, the features that give each example's stored embeddings, and what connector.json records."""

    cfg: Any
    features: Any
    meta: dict


@dataclass
class TrainResult:
    output_dir: Path  # adapter dir (LoRA) or model dir (full), with the processor
    steps: int
    final_loss: float | None
    seconds: float
    history: list[dict] = field(default_factory=list)
    train_loss_tokens: int = 0
    trainable_params: int = 0
    total_params: int = 0


class VlmTrainer(Trainer):
    """Trainer that logs the number of loss tokens per batch and validates by generating answers."""

    def __init__(self, *args, gen_eval=None, answer_only: bool = True, length_tolerance: int = -1, **kwargs):
        super().__init__(*args, **kwargs)
        self._length_tolerance = length_tolerance
        self._gen_eval = gen_eval
        self._answer_only = answer_only
        self._loss_tokens = 0
        self._loss_batches = 0
        self._pending_eval: tuple | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self._loss_tokens += int((inputs["labels"] != -100).sum())
            self._loss_batches += 1
        # Validation asks for outputs but keeps only the loss (prediction_loss_only): no logits needed there either.
        if self._answer_only and (not return_outputs or self.args.prediction_loss_only):
            try:
                loss, _ = answer_only_loss(model, inputs, num_items_in_batch)
            except Unsupported as e:
                log.warning(f"[train] answer-only logits off ({e}); computing the full logits")
                self._answer_only = False
            else:
                if (
                    self.args.average_tokens_across_devices
                    and self.model_accepts_loss_kwargs
                    and num_items_in_batch is not None
                ):
                    loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss scales a summed loss
                return (loss, {}) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        return self._length_sampler(
            ds, self.args.train_batch_size * self.args.gradient_accumulation_steps
        ) or super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        return self._length_sampler(eval_dataset, self.args.eval_batch_size) or super()._get_eval_sampler(eval_dataset)

    def _length_sampler(self, ds, batch_size: int):
        """Length-grouped batches (`vlmtune.train.sampling`) over the encoded token ids' lengths (transformers would
        look them up under the processor's first input name, which may be pixel_values)."""
        if self.args.train_sampling_strategy != "group_by_length" or not isinstance(ds, EncodedDataset):
            return None
        return EpochLengthSampler(
            batch_size, ds.lengths, seed=self.args.data_seed or self.args.seed, tolerance=self._length_tolerance
        )

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._loss_batches:
            logs["loss_tokens_per_batch"] = round(self._loss_tokens / self._loss_batches, 2)
            self._loss_tokens = self._loss_batches = 0
        if self._gen_eval is not None and "eval_loss" in logs and "eval_accuracy" not in logs:
            self._pending_eval = (dict(logs), args, kwargs)  # logged with the generation scores: one entry
            return
        super().log(logs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self._gen_eval is not None:
            gen = self._gen_eval(self.model)
            pending, log_args, log_kwargs = getattr(self, "_pending_eval", None) or ({}, (), {})
            self._pending_eval = None
            self.log({**pending, **gen}, *log_args, **log_kwargs)
            metrics.update(gen)
        return metrics

    def _run_epoch(self, *args, **kwargs):
        # Resumed from a checkpoint at the last step, transformers would train one step more before it checks
        # whether training is over (an interrupted run would end one step longer than an uninterrupted one).
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        # transformers writes checkpoint-N file by file, then rotates old ones; a kill in between leaves a
        # folder that looks like a checkpoint. A sentinel listing every file, written last, marks it complete.
        # transformers deletes older checkpoints before the sentinel is written; save_total_limit=2 keeps the
        # previous, complete one, so a kill in between resumes from it.
        super()._save_checkpoint(model, trial)
        self._write_sentinel()

    def _write_sentinel(self) -> None:
        if self.args.should_save:
            ckpt = checkpoints_dir(self.args) / f"checkpoint-{self.state.global_step}"
            if all(hasattr(self, a) for a in LOSS_ATTRS):  # transformers' private loss bookkeeping (5.x)
                atomic_write_json(
                    ckpt / LOSS_STATE,
                    {
                        "total_loss": self._total_loss_scalar,
                        "unlogged_loss": float(self._tr_loss.item()),
                        "last_logged_step": self._globalstep_last_logged,
                        "first_step": self._initial_global_step,
                    },
                )
            mark_complete(ckpt)


def make_generation_eval(processor: Processor, examples: list[Example], task: Task, ecfg: EvalConfig):
    """A function model -> {"eval_accuracy": ..., "eval_parse_failure_rate": ...} on the validation examples."""
    from vlmtune.infer.generate import generate

    def run(model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        texts = generate(
            model, processor, examples, batch_size=ecfg.batch_size, max_new_tokens=ecfg.max_new_tokens, desc="validate"
        )
        if was_training:
            model.train()
        parsed = [task.parse(t, ex) for t, ex in zip(texts, examples)]
        correct = [p.ok and task.correct(p.value, ex) for p, ex in zip(parsed, examples)]
        return {
            "eval_accuracy": sum(correct) / max(1, len(correct)),
            "eval_parse_failure_rate": sum(not p.ok for p in parsed) / max(1, len(parsed)),
        }

    return run


def attach_lora(model: Model, tcfg: TrainConfig) -> Model:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from vlmtune.models.load import lora_target_modules, projector_modules_to_save

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=tcfg.gradient_checkpointing)
    targets = lora_target_modules(model, tcfg.lora_target, tcfg.lora_modules)
    lcfg = LoraConfig(
        r=tcfg.lora_r,
        lora_alpha=tcfg.lora_alpha,
        lora_dropout=tcfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        modules_to_save=projector_modules_to_save(model, tcfg.lora_target) or None,
    )
    return get_peft_model(model, lcfg)


def count_params(model: Model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# The package each train.report_to logger needs (transformers' integration name -> import name).
LOGGER_PACKAGES = {
    "azure_ml": "azureml",
    "comet_ml": "comet_ml",
    "mlflow": "mlflow",
    "neptune": "neptune",
    "tensorboard": "tensorboard",
    "trackio": "trackio",
    "wandb": "wandb",
    "codecarbon": "codecarbon",
    "clearml": "clearml",
    "dagshub": "dagshub",
    "flyte": "flytekit",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
}


def check_train_config(tcfg: TrainConfig) -> None:
    """What transformers would refuse only once training starts: the optimizer, scheduler and logger names, and
    the logger's package (ConfigError naming the key, the choices and the install command). A bitsandbytes
    optimizer's extra is checked with the recipe's other extras (vlmtune.pipeline.needed_extras)."""
    import difflib
    import importlib.util

    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from vlmtune.errors import ConfigError

    def one_of(key: str, value: str, allowed: list[str]) -> None:
        if value not in allowed:
            near = difflib.get_close_matches(value, allowed, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"'{key}' is {value!r}{hint}; transformers accepts: {', '.join(allowed)}")

    one_of("train.optim", tcfg.optim, [o.value for o in OptimizerNames])
    one_of("train.lr_scheduler", tcfg.lr_scheduler, [s.value for s in SchedulerType])
    for name in tcfg.report_to:
        one_of("train.report_to", name, sorted(LOGGER_PACKAGES))
        if importlib.util.find_spec(LOGGER_PACKAGES[name]) is None:
            raise ConfigError(
                f"train.report_to includes {name}, but its package is not installed: "
                f"pip install {LOGGER_PACKAGES[name]} (or drop it from train.report_to)"
            )


def checkpoints_dir(args: TrainingArguments) -> Path:
    """Where transformers writes checkpoint-N (output_dir, which training_arguments always sets)."""
    assert args.output_dir is not None
    return Path(args.output_dir)


def training_arguments(out_dir: Path, tcfg: TrainConfig, *, has_val: bool, device: str, dtype) -> TrainingArguments:
    per_epoch = tcfg.eval_steps == 0
    return TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        run_name=out_dir.name,  # trackers name the run after runs/<name>; vlmtune.track finds it by that name
        per_device_train_batch_size=tcfg.batch_size,
        per_device_eval_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps,
        learning_rate=tcfg.lr,
        weight_decay=tcfg.weight_decay,
        # A float < 1 is a ratio of the total steps; warmup_steps (an int) wins when set.
        warmup_steps=tcfg.warmup_steps if tcfg.warmup_steps > 0 else tcfg.warmup_ratio,
        optim=tcfg.optim,
        lr_scheduler_type=tcfg.lr_scheduler,
        logging_steps=tcfg.logging_steps,
        logging_first_step=True,
        eval_strategy=("no" if not has_val else ("epoch" if per_epoch else "steps")),
        eval_steps=None if per_epoch else tcfg.eval_steps,
        save_strategy=("epoch" if tcfg.save_steps == 0 else "steps"),
        save_steps=tcfg.save_steps or 500,
        save_total_limit=2,
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        # TensorBoard is attached by train() with an explicit log dir (runs/<name>/logs), not through report_to.
        report_to=[r for r in tcfg.report_to if r != "tensorboard"],
        remove_unused_columns=False,  # the collator needs every field (pixel_values, labels)
        label_names=["labels"],
        dataloader_num_workers=0,
        use_cpu=(device == "cpu"),
        bf16=(dtype == torch.bfloat16),
        fp16=(dtype == torch.float16),
        activation_checkpointing=tcfg.gradient_checkpointing,
        disable_tqdm=True,  # ConsoleCallback draws the progress bar
        save_only_model=False,
        train_sampling_strategy="group_by_length" if tcfg.group_by_length else "random",
        prediction_loss_only=True,  # validation loss only (answers are scored by generation), no full logits kept
    )


def train(
    ref: ModelRef,
    train_examples: list[Example],
    val_examples: list[Example],
    out_dir: str | Path,
    tcfg: TrainConfig,
    *,
    task: Task | None = None,
    ecfg: EvalConfig | None = None,
    resume: bool = False,
    callbacks: list | None = None,
    stage: str = "train",
    connector: ConnectorSetup | None = None,
) -> TrainResult:
    """Fine-tune `ref`; writes OUT/adapter (or OUT/model, or OUT/connector with `connector`), OUT/checkpoints,
    OUT/logs. `stage` names the job in the console (the tiny base's build trains through here too).

    With a task and validation examples, validation generates answers (eval settings from `ecfg`) and scores them.
    Under torchrun / `accelerate launch` every rank runs this; only global rank 0 writes the results."""
    from vlmtune.models.load import load_model

    # --- set up -------------------------------------------------------------------------------------
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tcfg.seed)  # LoRA init is random: seed it so runs (and resumes) are reproducible
    model, processor = load_model(ref)
    model.train()
    if connector is not None:
        from vlmtune.models.connector import build

        model, processor = build(model, processor, connector.features, connector.cfg)  # the LM frozen
        if connector.cfg.lora:  # the ablation: LoRA on the LM, trained with the connector
            model.lm = attach_lora(model.lm, tcfg)
        model.train()
    elif tcfg.method == "lora":
        model = attach_lora(model, tcfg)
    elif tcfg.freeze_vision:
        for name, p in model.named_parameters():
            if module_part(name) == "vision":
                p.requires_grad_(False)
    trainable, total = count_params(model)
    what = ("memory connector" + (" + LoRA on the LM" if connector.cfg.lora else "")) if connector else tcfg.method
    log.info(f"[{stage}] {what}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
    enc = EncodeSettings(loss_on=tcfg.loss_on, max_length=tcfg.max_length)
    train_ds = EncodedDataset(processor, train_examples, enc)
    val_ds = EncodedDataset(processor, val_examples, enc) if val_examples else None
    log.info(
        f"[{stage}] {len(train_ds)} train examples, {train_ds.loss_tokens} loss tokens "
        f"({tcfg.loss_on} tokens; image and padding tokens excluded)"
    )
    _log_padding(train_ds, tcfg, stage)
    gen_eval = None
    if task is not None and val_examples:
        gen_eval = make_generation_eval(processor, val_examples[: tcfg.val_max_examples], task, ecfg or EvalConfig())
    device = str(next(model.parameters()).device.type)
    args = training_arguments(
        out, tcfg, has_val=val_ds is not None, device=device, dtype=next(model.parameters()).dtype
    )
    callbacks = list(callbacks or [])
    if "tensorboard" in tcfg.report_to and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "logs"))))
    trainer = VlmTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=Collator(tokenizer_of(processor).pad_token_id),
        processing_class=processor,
        callbacks=callbacks,
        gen_eval=gen_eval,
        answer_only=tcfg.answer_only_logits,
        length_tolerance=tcfg.length_tolerance,
    )
    for noisy in (PrinterCallback, ProgressCallback):  # they print raw log dicts to stdout
        trainer.remove_callback(noisy)
    trainer.add_callback(ConsoleCallback(stage))
    # --- run ----------------------------------------------------------------------------------------
    last = last_complete_checkpoint(checkpoints_dir(args)) if resume else None
    if resume:
        log.info(
            f"[{stage}] resuming from {last}" if last else f"[{stage}] --resume: no checkpoint yet, starting fresh"
        )
    if last is not None and (last / LOSS_STATE).exists():
        trainer.add_callback(RestoreLossState(trainer, json.loads((last / LOSS_STATE).read_text())))
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.state.global_step == 0:
        raise ConfigError(
            f"training ran 0 optimizer steps ({len(train_ds)} train examples, train.batch_size "
            f"{tcfg.batch_size}, train.grad_accum {tcfg.grad_accum}, train.epochs {tcfg.epochs}, "
            f"train.max_steps {tcfg.max_steps}), so nothing was fine-tuned. Fix: give more train "
            "examples, more epochs or train.max_steps >= 1"
        )
    # --- clean up -----------------------------------------------------------------------------------
    final_dir = out / ("connector" if connector else "adapter" if tcfg.method == "lora" else "model")
    partial = out / f".{final_dir.name}.partial"  # the same name on every rank: they all call save_model
    if trainer.is_world_process_zero() and partial.exists():
        shutil.rmtree(partial)  # left by a run killed while saving
    if connector is not None:
        if trainer.is_world_process_zero():
            from vlmtune.models.connector import save_connector

            save_connector(model, partial, connector.meta)
    else:
        trainer.save_model(str(partial))  # every rank calls it (ZeRO-3/FSDP gather shards); only rank 0 writes
    history = trainer.state.log_history
    if trainer.is_world_process_zero():
        backend = getattr(tokenizer_of(processor), "backend_tokenizer", None)
        if backend is not None:  # the last batch's padding settings would be saved too: keep what was loaded
            backend.no_padding()
            backend.no_truncation()
        processor.save_pretrained(str(partial))
        # Trainer.save_model pickles TrainingArguments there; a pickle has no place in what gets exported.
        (partial / "training_args.bin").unlink(missing_ok=True)
        _sort_adapter_config(partial)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(partial, final_dir)  # the adapter appears whole or not at all
        atomic_write_json(out / "train_history.json", history)  # written last: marks the training complete
    losses = [h["loss"] for h in history if "loss" in h]
    return TrainResult(
        output_dir=final_dir,
        steps=trainer.state.global_step,
        final_loss=losses[-1] if losses else None,
        seconds=time.time() - t0,
        history=history,
        train_loss_tokens=train_ds.loss_tokens,
        trainable_params=trainable,
        total_params=total,
    )


def _log_padding(ds: EncodedDataset, tcfg: TrainConfig, stage: str = "train") -> None:
    """How much of the training batches is padding, in a random order and in the order training uses."""
    lengths = ds.lengths
    if len(lengths) < 2:
        return
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(tcfg.seed)).tolist()
    grouped = length_grouped_indices(
        lengths, tcfg.batch_size * tcfg.grad_accum, torch.Generator().manual_seed(tcfg.seed), tcfg.length_tolerance
    )
    before = padding_fraction(lengths, shuffled, tcfg.batch_size)
    after = padding_fraction(lengths, grouped, tcfg.batch_size)
    how = (
        "grouped by length (train.group_by_length)"
        if tcfg.group_by_length
        else "shuffled (train.group_by_length=false)"
    )
    log.info(
        f"[{stage}] padding: {before:.1%} of batch tokens when shuffled, {after:.1%} when grouped by length; "
        f"batches are {how}"
    )


def _sort_adapter_config(folder: Path) -> None:
    """PEFT writes target_modules (a set) in hash order, which changes from process to process; sorted, the same
    training gives the same adapter_config.json, so the adapter's content hash (in fingerprints) is reproducible."""
    path = folder / "adapter_config.json"
    if not path.exists():
        return
    cfg = json.loads(path.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    atomic_write_json(path, cfg)


def load_history(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else []
