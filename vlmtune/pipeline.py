"""The whole job one recipe drives: data -> zero-shot eval -> fine-tune -> eval -> comparison report.

    summary = run_pipeline(load_config("recipes/quickstart.yaml"))

Everything a result depends on is written next to it in runs/<name>/ (config.yaml, the exact data
splits, predictions, metrics, fingerprints, the adapter, the report). With `resume=True`, finished
stages are kept and training continues from its last checkpoint.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmtune.config import RunConfig, dump_yaml, task_options
from vlmtune.data.example import Example, atomic_write_text, load_jsonl, write_jsonl
from vlmtune.errors import ConfigError


def read_files(cfg: RunConfig, path: str, log=print) -> list[Example]:
    """Read one data file (or folder) with the configured reader: at most data.limit records, then a
    seeded sample of data.sample of them (stratified by target, spread over the groups, file order kept)."""
    import itertools

    import vlmtune.data.formats  # noqa: F401  (registers the readers)
    from vlmtune.registry import FORMATS, TASKS

    d = cfg.data
    opts = dict(d.format_options)
    if d.format == "jsonl":
        opts.setdefault("known_tasks", TASKS.names())
    import inspect

    fn = FORMATS.get(d.format)
    if "task" in inspect.signature(fn).parameters:
        opts.setdefault("task", d.task)  # readers that can produce several tasks follow data.task
    reader = fn(path, **opts)
    examples = list(itertools.islice(reader, d.limit) if d.limit else reader)
    if getattr(reader, "rejected", 0):
        log(f"[data] {path}: {reader.rejected} invalid record(s) skipped -> {reader.rejects_path}")
    if d.sample and len(examples) <= d.sample:
        log(f"[data] {path}: data.sample={d.sample} but only {len(examples)} record(s) read; keeping them all")
    elif d.sample:
        from vlmtune.data.splits import sample_examples

        n_read = len(examples)
        examples, how = sample_examples(examples, d.sample, seed=d.seed)
        log(f"[data] {path}: sampled {len(examples)} of the {n_read} records read (data.sample={d.sample}, "
            f"seed {d.seed}, {how})")
    return examples


def prepare_data(cfg: RunConfig, run_dir: Path, *, progress: bool = True, log=print) -> dict[str, list[Example]]:
    """Produce train/val/test Examples and write the exact splits to run_dir/data/."""
    from vlmtune.data.splits import check_no_leakage, split_counts, split_examples
    from vlmtune.registry import TASKS

    d = cfg.data
    data_dir = run_dir / "data"
    if d.source == "synth":
        from vlmtune.data.synth import synthesize

        src = synthesize(d.task, d.n, data_dir / "source", seed=d.seed, image_size=d.image_size, progress=progress)
        examples = load_jsonl(src, known_tasks=TASKS.names())
        splits = split_examples(examples, d.split, seed=d.seed, stratify=d.stratify)
    elif d.path:
        splits = split_examples(read_files(cfg, d.path, log), d.split, seed=d.seed, stratify=d.stratify)
    else:
        splits = {name: (read_files(cfg, getattr(d, name), log) if getattr(d, name) else [])
                  for name in ("train", "val", "test")}
    for name in ("train", "val", "test"):
        splits.setdefault(name, [])
    if d.augment:
        from vlmtune.data.augment import augment_split

        extra = augment_split(splits["train"], data_dir / "augmented", split_name="train", seed=d.seed,
                              progress=progress, **d.augment)
        splits["train"] = splits["train"] + list(extra)
        log(f"[data] {len(extra)} augmented copies added to the train split only ({d.augment})")
    check_no_leakage(splits)
    for name, exs in splits.items():
        wrong = [e.id for e in exs if e.task != d.task]
        if wrong:
            raise ConfigError(f"data.task is '{d.task}' but {len(wrong)} {name} records have another task "
                              f"(e.g. '{wrong[0]}'); set data.task to match the data")
        write_jsonl(data_dir / f"{name}.jsonl", exs)
    counts = split_counts(splits)
    log("[data] " + ", ".join(f"{k}: {len(v)}" for k, v in splits.items()) + f"  (labels: {counts.get('train', {})})")
    if not splits["train"] or not splits["test"]:
        raise ConfigError("the train and test splits must both be non-empty; check data.split / data.train / data.test")
    return splits


def load_splits(run_dir: Path) -> dict[str, list[Example]]:
    return {n: load_jsonl(run_dir / "data" / f"{n}.jsonl") if (run_dir / "data" / f"{n}.jsonl").exists() else []
            for n in ("train", "val", "test")}


def _stage_done(path: Path, resume: bool) -> bool:
    return resume and path.exists()


def run_pipeline(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                 log=print) -> dict[str, Any]:
    from vlmtune.eval.report import compare_runs, format_summary
    from vlmtune.eval.run import evaluate
    from vlmtune.models.load import load_model, resolve_name
    from vlmtune.tasks import get_task
    from vlmtune.train.trainer import load_history, train

    from vlmtune.distributed import barrier, is_main_process

    # --- set up -------------------------------------------------------------------------------------
    t0 = time.time()
    run_dir = cfg.run_dir
    main = is_main_process()  # under a launcher, rank 0 sets up and the other ranks wait, then read its splits
    if main:
        if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite):
            raise ConfigError(f"{run_dir} already holds a run. Pass --resume to continue it, --overwrite to replace "
                              "it, or choose another name=...")
        if overwrite and run_dir.exists() and not resume:
            log(f"[run] replacing {run_dir}")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        if resume and (run_dir / "data" / "test.jsonl").exists():
            splits = load_splits(run_dir)
            log(f"[data] reusing the splits in {run_dir / 'data'}")
        else:
            splits = prepare_data(cfg, run_dir, progress=progress, log=log)
        resolve_name(cfg.model, log=log)  # builds the tiny base once, before other ranks look for it
    barrier()
    if not main:
        splits = load_splits(run_dir)
    task = get_task(cfg.data.task, **task_options(cfg))
    model_path = resolve_name(cfg.model, log=log)
    mcfg = replace(cfg.model, name=model_path)
    ev = dict(batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens, n_boot=cfg.eval.n_boot,
              mode=cfg.eval.mode, permutations=cfg.eval.permutations,
              progress=progress, log=log, model_name=cfg.model.name, model_path=model_path)
    # --- zero-shot ----------------------------------------------------------------------------------
    if cfg.eval.zero_shot and not _stage_done(run_dir / "zero_shot" / "metrics.json", resume):
        model, processor = load_model(mcfg, log=log)
        evaluate(model, processor, splits["test"], task, run_dir / "zero_shot", label="zero-shot", **ev)
        del model
    # --- fine-tune ----------------------------------------------------------------------------------
    final_dir = run_dir / ("adapter" if cfg.train.method == "lora" else "model")
    if _stage_done(final_dir, resume) and (run_dir / "train_history.json").exists():
        log(f"[train] kept the finished training in {final_dir}")
        history = load_history(run_dir / "train_history.json")
    else:
        result = train(model_path, splits["train"], splits["val"], run_dir, cfg.train, model_cfg=mcfg, task=task,
                       resume=resume, gen_batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                       progress=progress, log=log)
        history = result.history
        log(f"[train] {result.steps} steps in {result.seconds:.0f}s -> {result.output_dir}")
    barrier()  # the adapter rank 0 saved is complete before any rank loads it
    # --- evaluate the fine-tuned model --------------------------------------------------------------
    if not _stage_done(run_dir / "finetuned" / "metrics.json", resume):
        if cfg.train.method == "lora":
            model, processor = load_model(mcfg, adapter=str(final_dir), log=log)
            evaluate(model, processor, splits["test"], task, run_dir / "finetuned", label="fine-tuned",
                     adapter=str(final_dir), **ev)
        else:
            model, processor = load_model(replace(mcfg, name=str(final_dir)), log=log)
            evaluate(model, processor, splits["test"], task, run_dir / "finetuned", label="fine-tuned",
                     **{**ev, "model_path": str(final_dir)})
        del model
    # --- compare ------------------------------------------------------------------------------------
    if not is_main_process():
        return {"run_dir": str(run_dir)}  # under a launcher, rank 0 writes the report
    if not cfg.eval.zero_shot:
        log(f"[run] done in {time.time() - t0:.0f}s (no zero-shot baseline, so no comparison report)")
        return {"run_dir": str(run_dir)}
    summary = compare_runs(run_dir / "zero_shot", run_dir / "finetuned", run_dir, history=history,
                           title=f"vlmtune: {cfg.name} ({cfg.data.task}, {cfg.model.name})",
                           n_boot=cfg.eval.n_boot, seed=cfg.data.seed)
    summary["seconds"] = round(time.time() - t0, 1)
    log(format_summary(summary))
    log(f"[run] finished in {summary['seconds']:.0f}s")
    return summary
