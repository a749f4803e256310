"""The whole job one recipe drives: data -> zero-shot eval -> fine-tune -> eval -> comparison report.

    summary = run_pipeline(load_config("recipes/quickstart.yaml"))

Everything a result depends on is written next to it in runs/<name>/ (config.yaml, the exact data
splits, predictions, metrics, fingerprints, the adapter, the report). With `resume=True`, finished
stages are kept and training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from vlmtune.build import resolve_model
from vlmtune.config import RunConfig, dump_yaml
from vlmtune.data.example import Example, atomic_write_text
from vlmtune.data.prepare import DEDUP_FILE, load_splits, prepare_data, reader_options
from vlmtune.distributed import barrier, is_main_process
from vlmtune.errors import ConfigError
from vlmtune.models.load import ModelRef
from vlmtune.tasks.base import ReportSection, Task, build_task

log = logging.getLogger(__name__)


def check_recipe(cfg: RunConfig) -> Task:
    """What the registries must know: the task (and its options) and the data format (and its options); and what
    transformers would refuse only after data preparation (optimizer, scheduler, loggers)."""
    from vlmtune.train.trainer import check_train_config

    task = build_task(cfg.data.task, cfg.data.task_options)
    check_train_config(cfg.train)
    if cfg.data.source != "synth":
        reader_options(cfg)
    if cfg.teach.target != "none":
        from vlmtune.teacher.filters import FilterConfig
        from vlmtune.teacher.prompts import load_template

        FilterConfig.of(cfg.teach.filters)
        load_template(cfg.teach.prompt, rationalize=cfg.teach.rationalize)
    return task


def setup_data(cfg: RunConfig, run_dir: Path, *, reuse: bool) -> tuple[dict[str, list[Example]], ModelRef]:
    """The run's splits and its resolved model. Under a launcher, rank 0 prepares the data (or, with `reuse`,
    reads the splits already in run_dir/data) and builds a local base (tiny, GGUF) once; the other ranks wait,
    then read the same splits, so every rank works on one dataset."""
    if is_main_process():
        if reuse and (run_dir / "data" / "test.jsonl").exists():
            splits = load_splits(run_dir)
            log.info(f"[data] reusing the splits in {run_dir / 'data'}")
        else:
            splits = prepare_data(cfg, run_dir)
            if cfg.teach.target != "none":
                splits["train"] = teach_train_split(cfg, run_dir, splits["train"])
        ref = resolve_model(cfg.model)
    barrier()
    if not is_main_process():
        splits, ref = load_splits(run_dir), resolve_model(cfg.model)
    return splits, ref


def data_sections(run_dir: Path) -> list[ReportSection]:
    """What the data check found, for the run report: the near-duplicate images across the splits."""
    path = run_dir / "data" / DEDUP_FILE
    if not path.exists():
        return []
    found = json.loads(path.read_text(encoding="utf-8"))
    pairs = found["pairs"]
    text = [f"**{len(pairs)}** pair(s) of near-duplicate images across the splits (perceptual hash within "
            f"{found['max_distance']} bits, `data.dedup={found['mode']}`; all pairs in `data/{DEDUP_FILE}`)."]
    if pairs:
        text.append("Test examples whose near-duplicates were trained on can inflate the fine-tuned scores: give "
                    "related examples one `group`, or set `data.dedup=group`.")
    table = [["split", "id", "split", "id", "distance"]] + [
        [p["split_a"], p["id_a"], p["split_b"], p["id_b"], str(p["distance"])] for p in pairs[:20]]
    return [ReportSection("Near-duplicate images across splits", text=text, table=table if pairs else None)]


def teach_train_split(cfg: RunConfig, run_dir: Path, train: list[Example]) -> list[Example]:
    """The recipe's `teach:` section: the teacher writes the train split's targets (run_dir/teacher/ holds its
    report); the result replaces data/train.jsonl, so the run directory keeps what was trained on."""
    from vlmtune.data.example import write_jsonl
    from vlmtune.teacher.run import teach

    result = teach(train, build_task(cfg.data.task, cfg.data.task_options), cfg.teach, run_dir / "teacher")
    write_jsonl(run_dir / "data" / "train.jsonl", result.examples)
    return result.examples


def _stage_done(path: Path, resume: bool) -> bool:
    return resume and path.exists()


def start_run_dir(cfg: RunConfig, *, resume: bool, overwrite: bool) -> Path:
    """The run directory, checked (an existing run needs --resume or --overwrite) and holding config.yaml."""
    run_dir = cfg.run_dir
    if is_main_process():
        if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite):
            raise ConfigError(f"{run_dir} already holds a run. Pass --resume to continue it, --overwrite to replace "
                              "it, or choose another name=...")
        if overwrite and run_dir.exists() and not resume:
            log.info(f"[run] replacing {run_dir}")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    return run_dir


def run_pipeline(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    from vlmtune.report import compare_runs
    from vlmtune.eval.run import evaluate
    from vlmtune.models.load import load_model
    from vlmtune.train.trainer import load_history, train

    # --- set up -------------------------------------------------------------------------------------
    t0 = time.time()
    task = check_recipe(cfg)
    run_dir = start_run_dir(cfg, resume=resume, overwrite=overwrite)
    splits, ref = setup_data(cfg, run_dir, reuse=resume)
    if cfg.memory.enabled:  # every split gets retrieved reminders (vlmtune.memory.experiment)
        from vlmtune.memory.experiment import with_memory

        splits = with_memory(cfg, splits, run_dir, ref)
    # --- zero-shot ----------------------------------------------------------------------------------
    if cfg.eval.zero_shot and not _stage_done(run_dir / "zero_shot" / "metrics.json", resume):
        model, processor = load_model(ref)
        evaluate(model, processor, splits["test"], task, run_dir / "zero_shot", label="zero-shot", ref=ref,
                 ecfg=cfg.eval)
        del model
    # --- fine-tune ----------------------------------------------------------------------------------
    final_dir = run_dir / ("adapter" if cfg.train.method == "lora" else "model")
    if _stage_done(final_dir, resume) and (run_dir / "train_history.json").exists():
        log.info(f"[train] kept the finished training in {final_dir}")
        history = load_history(run_dir / "train_history.json")
    else:
        result = train(ref, splits["train"], splits["val"], run_dir, cfg.train, task=task, ecfg=cfg.eval,
                       resume=resume)
        history = result.history
        log.info(f"[train] {result.steps} steps in {result.seconds:.0f}s -> {result.output_dir}")
    barrier()  # the adapter rank 0 saved is complete before any rank loads it
    # --- evaluate the fine-tuned model --------------------------------------------------------------
    if not _stage_done(run_dir / "finetuned" / "metrics.json", resume):
        lora = cfg.train.method == "lora"
        tuned = ref if lora else ref.at(final_dir)
        model, processor = load_model(tuned, adapter=final_dir if lora else None)
        evaluate(model, processor, splits["test"], task, run_dir / "finetuned", label="fine-tuned", ref=tuned,
                 ecfg=cfg.eval, adapter=str(final_dir) if lora else None)
        del model
    # --- compare ------------------------------------------------------------------------------------
    if not is_main_process():
        return {"run_dir": str(run_dir)}  # under a launcher, rank 0 writes the report
    memory: dict[str, Any] = {}
    if cfg.memory.enabled:  # the memory methods side by side, and memory on vs off, paired
        from vlmtune.memory.experiment import compare_methods

        lora = cfg.train.method == "lora"
        methods = compare_methods(cfg, run_dir, ref if lora else ref.at(final_dir), task,
                                  adapter=final_dir if lora else None, resume=resume)
        memory = {"memory": methods["on_vs_off"]} if "on_vs_off" in methods else {}
    if not cfg.eval.zero_shot:
        log.info(f"[run] done in {time.time() - t0:.0f}s (no zero-shot baseline, so no comparison report)")
        return {"run_dir": str(run_dir), **memory}
    summary = compare_runs(run_dir / "zero_shot", run_dir / "finetuned", run_dir, history=history,
                           title=f"vlmtune: {cfg.name} ({cfg.data.task}, {cfg.model.name})",
                           n_boot=cfg.eval.n_boot, seed=cfg.data.seed, extra=data_sections(run_dir))
    summary.update(memory)
    from vlmtune.track import log_results

    log_results(run_dir, cfg, step=max((h.get("step", 0) for h in history), default=0))
    summary["seconds"] = round(time.time() - t0, 1)
    log.info(f"[run] finished in {summary['seconds']:.0f}s")
    return summary
