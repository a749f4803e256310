"""A recipe's data section -> the exact train/val/test splits of a run, written to runs/<name>/data/.

    splits = prepare_data(cfg, run_dir)      # synthesize or read, sample, split, augment, check, write
    splits = load_splits(run_dir)            # the splits a run used, read back (resume, other ranks)

Readers come from the FORMATS registry (`data.format`, options `data.format_options`); every record is
validated as it is read, so a bad one stops the run here, before any model is loaded.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from pathlib import Path

from vlmtune.config import RunConfig
from vlmtune.data.example import Example, load_jsonl, write_jsonl
from vlmtune.errors import ConfigError
from vlmtune.registry import FORMATS, TASKS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def reader_options(cfg: RunConfig) -> dict:
    """The keyword options the configured reader gets: data.format_options, checked against its parameters,
    plus the task (for readers that can produce several) and the known task names (jsonl)."""
    d = cfg.data
    fn = FORMATS.get(d.format)
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        for key in d.format_options:
            if key not in known:
                from vlmtune.config import _unknown

                raise _unknown(key, known, f"data.format_options of the '{d.format}' reader")
    opts = dict(d.format_options)
    if d.format == "jsonl":
        opts.setdefault("known_tasks", TASKS.names())
    if "task" in params:
        opts.setdefault("task", d.task)  # readers that can produce several tasks follow data.task
    return opts


def read_files(cfg: RunConfig, path: str) -> list[Example]:
    """Read one data file (or folder) with the configured reader: at most data.limit records, then a
    seeded sample of data.sample of them (stratified by target, spread over the groups, file order kept)."""
    d = cfg.data
    reader = FORMATS.get(d.format)(path, **reader_options(cfg))
    examples = list(itertools.islice(reader, d.limit) if d.limit else reader)
    if getattr(reader, "rejected", 0):
        log.info(f"[data] {path}: {reader.rejected} invalid record(s) skipped -> {reader.rejects_path}")
    if d.sample and len(examples) <= d.sample:
        log.info(f"[data] {path}: data.sample={d.sample} but only {len(examples)} record(s) read; keeping them all")
    elif d.sample:
        from vlmtune.data.splits import sample_examples

        n_read = len(examples)
        examples, how = sample_examples(examples, d.sample, seed=d.seed)
        log.info(f"[data] {path}: sampled {len(examples)} of the {n_read} records read (data.sample={d.sample}, "
                 f"seed {d.seed}, {how})")
    return examples


def prepare_data(cfg: RunConfig, run_dir: Path) -> dict[str, list[Example]]:
    """Produce train/val/test Examples and write the exact splits to run_dir/data/."""
    from vlmtune.data.splits import check_no_leakage, split_counts, split_examples

    d = cfg.data
    data_dir = run_dir / "data"
    if d.source == "synth":
        from vlmtune.data.synth import synthesize

        src = synthesize(d.task, d.n, data_dir / "source", seed=d.seed, image_size=d.image_size,
                         options=d.synth_options)
        examples = load_jsonl(src, known_tasks=TASKS.names())
        splits = split_examples(examples, d.split, seed=d.seed, stratify=d.stratify)
    elif d.path:
        splits = split_examples(read_files(cfg, d.path), d.split, seed=d.seed, stratify=d.stratify)
    else:
        splits = {name: (read_files(cfg, getattr(d, name)) if getattr(d, name) else []) for name in SPLITS}
    for name in SPLITS:
        splits.setdefault(name, [])
    if d.augment:
        from vlmtune.data.augment import augment_split

        extra = augment_split(splits["train"], data_dir / "augmented", split_name="train", seed=d.seed, **d.augment)
        splits["train"] = splits["train"] + list(extra)
        log.info(f"[data] {len(extra)} augmented copies added to the train split only ({d.augment})")
    check_no_leakage(splits)
    for name, exs in splits.items():
        wrong = [e.id for e in exs if e.task != d.task]
        if wrong:
            raise ConfigError(f"data.task is '{d.task}' but {len(wrong)} {name} records have another task "
                              f"(e.g. '{wrong[0]}'); set data.task to match the data")
        write_jsonl(data_dir / f"{name}.jsonl", exs)
    counts = split_counts(splits)
    log.info("[data] " + ", ".join(f"{k}: {len(v)}" for k, v in splits.items())
             + f"  (labels: {counts.get('train', {})})")
    if not splits["train"] or not splits["test"]:
        raise ConfigError("the train and test splits must both be non-empty; check data.split / data.train / data.test")
    return splits


def load_splits(run_dir: Path) -> dict[str, list[Example]]:
    return {n: load_jsonl(run_dir / "data" / f"{n}.jsonl") if (run_dir / "data" / f"{n}.jsonl").exists() else []
            for n in SPLITS}
