"""The whole job one recipe drives: data -> zero-shot eval -> fine-tune -> eval -> comparison report.

    summary = run_pipeline(load_config("recipes/quickstart.yaml"))

Everything a result depends on is written next to it in runs/<name>/ (config.yaml, the exact data
splits, predictions, metrics, fingerprints, the adapter, the report). With `resume=True`, finished
stages are kept and training continues from its last complete checkpoint. Each stage writes its marker
last (data/manifest.json, metrics.json, train_history.json, report.html), so a killed stage is redone.
How the directory is locked, replaced and checked on resume: vlmtune.rundir.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from vlmtune.build import resolve_model
from vlmtune.config import RunConfig
from vlmtune.data.example import Example
from vlmtune.data.prepare import DEDUP_FILE, data_done, load_splits, prepare_data, reader_options, write_manifest
from vlmtune.distributed import barrier, is_main_process
from vlmtune.errors import ConfigError
from vlmtune.models.load import ModelRef, check_loadable
from vlmtune.rundir import Run, open_run
from vlmtune.tasks.base import ReportSection, Task, build_task

log = logging.getLogger(__name__)


def needed_extras(cfg: RunConfig, task: Task) -> list[tuple[str, str]]:
    """(pip extra, the setting that needs it) for every optional dependency the recipe uses (vlmtune.extras)."""
    from vlmtune.models.gguf import BUILTIN
    from vlmtune.registry import FORMATS

    needs = []
    if cfg.model.load_in_4bit or cfg.model.load_in_8bit:
        needs.append(("quant", "model.load_in_4bit" if cfg.model.load_in_4bit else "model.load_in_8bit"))
    if "bnb" in cfg.train.optim or "8bit" in cfg.train.optim or cfg.train.optim.startswith("paged_"):
        needs.append(("quant", f"train.optim={cfg.train.optim} (a bitsandbytes optimizer)"))
    if cfg.data.augment:
        needs.append(("augment", "data.augment"))
    if cfg.data.source == "hf":
        needs.append(("hf", "data.source=hf"))
    elif cfg.data.source != "synth" and FORMATS.extra_of(cfg.data.format):
        needs.append((str(FORMATS.extra_of(cfg.data.format)), f"data.format={cfg.data.format}"))
    if cfg.teach.target != "none" and cfg.teach.backend == "openai":
        needs.append(("remote", "teach.backend=openai"))
    if cfg.model.name in BUILTIN:
        needs.append((BUILTIN[cfg.model.name][2], f"model.name={cfg.model.name}"))
    return needs + task.extras()


def missing_extras(cfg: RunConfig, task: Task) -> list[str]:
    """One message per optional dependency the recipe needs that is not installed here."""
    from vlmtune.extras import installed, missing_message

    return [missing_message(extra, why) for extra, why in needed_extras(cfg, task) if not installed(extra)]


def check_recipe(cfg: RunConfig, *, require_extras: bool = True) -> Task:
    """What the registries must know: the task (and its options) and the data format (and its options); what
    transformers would refuse only after data preparation (optimizer, scheduler, loggers); the teacher's filters
    and prompt; with `require_extras`, that every optional dependency the recipe needs is installed (else one
    error naming each)."""
    from vlmtune.extras import MissingExtraError
    from vlmtune.train.trainer import check_train_config

    task = build_task(cfg.data.task, cfg.data.task_options)
    check_train_config(cfg.train)
    if cfg.eval.backend != "hf":
        raise ConfigError(
            "eval.backend=openai asks a model a server serves; a run evaluates the models it trains "
            "here, so it needs eval.backend=hf. Fix: drop eval.backend from the recipe, and evaluate a "
            "served model with `vlmtune eval --backend openai --endpoint URL --model NAME --data "
            "runs/NAME/data/test.jsonl` (then `vlmtune compare ... --allow-mismatch` against a run's "
            "evaluation)"
        )
    if cfg.data.source != "synth":
        reader_options(cfg)
    if cfg.teach.target != "none":
        from vlmtune.teacher.filters import FilterConfig
        from vlmtune.teacher.prompts import load_template

        FilterConfig.of(cfg.teach.filters)
        load_template(cfg.teach.prompt, rationalize=cfg.teach.rationalize)
    missing = missing_extras(cfg, task) if require_extras else []
    if missing:
        raise MissingExtraError("this recipe needs what is not installed here:\n  " + "\n  ".join(missing))
    return task


def setup_data(cfg: RunConfig, run: Run, task: Task) -> tuple[dict[str, list[Example]], ModelRef]:
    """The data stage: the run's splits (every example checked by the task) and its resolved model. Rank 0
    prepares the data in run.work (or, resuming, reads the splits already there), resolves the model (building
    a local base once), then publishes the run (config.yaml; a new run is moved into place); other ranks of a
    launcher wait, then read the same splits, so every rank works on one dataset."""
    if is_main_process():
        if run.resuming and data_done(run.work):
            splits = load_splits(run.work)
            log.info(f"[data] reusing the splits in {run.work / 'data'}")
        else:
            splits = prepare_data(cfg, run.work, mark_done=False)
            for exs in splits.values():
                for ex in exs:
                    task.check_example(ex)
            if cfg.teach.target != "none":
                splits["train"] = teach_train_split(cfg, run.work, splits["train"])
            write_manifest(run.work, splits)  # last: the data stage (teaching included) is complete
        ref = resolve_model(cfg.model)
        check_loadable(ref)
        moved = run.staged
        run.publish(cfg)
        if moved:
            splits = load_splits(run.path, check_images=False)  # the same records, at their published paths
    barrier()
    if not is_main_process():
        splits, ref = load_splits(run.path), resolve_model(cfg.model)
    return splits, ref


def data_sections(run_dir: Path) -> list[ReportSection]:
    """What the data check found, for the run report: the near-duplicate images across the splits."""
    path = run_dir / "data" / DEDUP_FILE
    if not path.exists():
        return []
    found = json.loads(path.read_text(encoding="utf-8"))
    pairs = found["pairs"]
    text = [
        f"**{len(pairs)}** pair(s) of near-duplicate images across the splits (perceptual hash within "
        f"{found['max_distance']} bits, `data.dedup={found['mode']}`; all pairs in `data/{DEDUP_FILE}`)."
    ]
    if pairs:
        text.append(
            "Test examples whose near-duplicates were trained on can inflate the fine-tuned scores: give "
            "related examples one `group`, or set `data.dedup=group`."
        )
    table = [["split", "id", "split", "id", "distance"]] + [
        [p["split_a"], p["id_a"], p["split_b"], p["id_b"], str(p["distance"])] for p in pairs[:20]
    ]
    return [ReportSection("Near-duplicate images across splits", text=text, table=table if pairs else None)]


def teach_train_split(cfg: RunConfig, run_dir: Path, train: list[Example]) -> list[Example]:
    """The recipe's `teach:` section: the teacher writes the train split's targets (run_dir/teacher/ holds its
    report); the result replaces data/train.jsonl, so the run directory keeps what was trained on."""
    from vlmtune.data.example import write_jsonl
    from vlmtune.teacher.run import teach

    result = teach(train, build_task(cfg.data.task, cfg.data.task_options), cfg.teach, run_dir / "teacher")
    write_jsonl(run_dir / "data" / "train.jsonl", result.examples)
    return result.examples


def run_pipeline(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, train_only: bool = False
) -> dict[str, Any]:
    """Run the recipe's stages in runs/<name> (locked for the run's lifetime; see vlmtune.rundir). With
    `train_only` (`vlmtune train`): the data and training stages only."""
    task = check_recipe(cfg)
    with open_run(cfg, resume=resume, overwrite=overwrite) as run:
        return _stages(cfg, task, run, train_only)


def _stages(cfg: RunConfig, task: Task, run: Run, train_only: bool) -> dict[str, Any]:
    from vlmtune.eval.run import evaluate
    from vlmtune.models.load import load_model
    from vlmtune.report import compare_runs
    from vlmtune.train.trainer import load_history, train

    # --- data ---------------------------------------------------------------------------------------
    t0 = time.time()
    splits, ref = setup_data(cfg, run, task)
    run_dir = run.path
    if cfg.memory.enabled:  # every split gets retrieved reminders (vlmtune.memory.experiment)
        from vlmtune.memory.experiment import with_memory

        splits = with_memory(cfg, splits, run_dir, ref)
    conn = None
    if cfg.connector.enabled:  # items' embeddings cached once; prompts rewritten (vlmtune.memory.connector)
        from vlmtune.memory.connector import prepare_run

        conn = prepare_run(cfg, splits, ref)

    def done(path: Path) -> bool:
        return run.resuming and path.exists()

    # --- zero-shot ----------------------------------------------------------------------------------
    if cfg.eval.zero_shot and not train_only and not done(run_dir / "zero_shot" / "metrics.json"):
        model, processor = load_model(ref)
        evaluate(
            model,
            processor,
            conn.plain["test"] if conn else splits["test"],
            task,
            run_dir / "zero_shot",
            label="no connector" if conn else "zero-shot",
            ref=ref,
            ecfg=cfg.eval,
        )
        del model
    # --- fine-tune ----------------------------------------------------------------------------------
    final_dir = run_dir / ("connector" if conn else "adapter" if cfg.train.method == "lora" else "model")
    summary: dict[str, Any] = {"run_dir": str(run_dir), "output_dir": str(final_dir)}
    if done(run_dir / "train_history.json") and final_dir.exists():
        log.info(f"[train] kept the finished training in {final_dir}")
        history = load_history(run_dir / "train_history.json")
        summary["kept"] = True
    else:
        trained = conn.soft if conn else splits
        result = train(
            ref,
            trained["train"],
            trained["val"],
            run_dir,
            cfg.train,
            task=task,
            ecfg=cfg.eval,
            resume=run.resuming,
            connector=conn.setup if conn else None,
        )
        history = result.history
        summary.update(steps=result.steps, train_seconds=round(result.seconds, 1))
        log.info(f"[train] {result.steps} steps in {result.seconds:.0f}s -> {result.output_dir}")
    barrier()  # the adapter rank 0 saved is complete before any rank loads it
    if train_only:
        return summary
    # --- evaluate the fine-tuned model --------------------------------------------------------------
    if conn and not done(run_dir / "finetuned" / "metrics.json"):
        from vlmtune.memory.connector import load_for_eval

        model, processor = load_for_eval(ref, final_dir, features=conn.setup.features)
        evaluate(
            model,
            processor,
            conn.soft["test"],
            task,
            run_dir / "finetuned",
            label="connector",
            ref=ref,
            ecfg=cfg.eval,
            adapter=str(final_dir),
        )
        del model
    elif not done(run_dir / "finetuned" / "metrics.json"):
        lora = cfg.train.method == "lora"
        tuned = ref if lora else ref.at(final_dir)
        model, processor = load_model(tuned, adapter=final_dir if lora else None)
        evaluate(
            model,
            processor,
            splits["test"],
            task,
            run_dir / "finetuned",
            label="fine-tuned",
            ref=tuned,
            ecfg=cfg.eval,
            adapter=str(final_dir) if lora else None,
        )
        del model
    # --- compare ------------------------------------------------------------------------------------
    if not is_main_process():
        return summary  # under a launcher, rank 0 writes the report
    memory: dict[str, Any] = {}
    if cfg.memory.enabled:  # the memory methods side by side, and memory on vs off, paired
        from vlmtune.memory.experiment import compare_methods

        lora = cfg.train.method == "lora"
        methods = compare_methods(
            cfg,
            run_dir,
            ref if lora else ref.at(final_dir),
            task,
            adapter=final_dir if lora else None,
            resume=run.resuming,
        )
        memory = {"memory": methods["on_vs_off"]} if "on_vs_off" in methods else {}
    if not cfg.eval.zero_shot:
        log.info(f"[run] done in {time.time() - t0:.0f}s (no zero-shot baseline, so no comparison report)")
        return {**summary, **memory}
    # The report is written again on every resume (report.html last); it reads the finished stages' files.
    summary = compare_runs(
        run_dir / "zero_shot",
        run_dir / "finetuned",
        run_dir,
        history=history,
        title=f"vlmtune: {cfg.name} ({cfg.data.task}, {cfg.model.name})",
        n_boot=cfg.eval.n_boot,
        seed=cfg.data.seed,
        extra=data_sections(run_dir),
        allow_mismatch=conn is not None,
    )  # the connector's prompts differ by design; listed
    summary.update(memory)
    from vlmtune.track import log_results

    log_results(run_dir, cfg, step=max((h.get("step", 0) for h in history), default=0))
    summary["seconds"] = round(time.time() - t0, 1)
    log.info(f"[run] finished in {summary['seconds']:.0f}s")
    return summary
