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
from vlmtune.data.dedup import DupPair, cross_split_pairs, merge_near_duplicates, report_pairs
from vlmtune.data.example import Example, atomic_write_json, load_jsonl, write_jsonl
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS, TASKS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEDUP_FILE = "near_duplicates.json"


def reader_options(cfg: RunConfig, data_dir: Path | None = None) -> dict:
    """The keyword options the configured reader gets: data.format_options, checked against its parameters,
    plus the task (for readers that can produce several) and the known task names (jsonl). For data.source=hf
    the reader is 'hf', with the data.hf_ keys (embedded images are written to data_dir/images)."""
    d = cfg.data
    fmt = "hf" if d.source == "hf" else d.format
    fn = FORMATS.get(fmt)
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        for key in d.format_options:
            if key not in known:
                from vlmtune.config import _unknown

                raise _unknown(key, known, f"data.format_options of the '{fmt}' reader")
    opts = dict(d.format_options)
    if d.source == "hf":
        opts.update(
            config=d.hf_config,
            revision=d.hf_revision,
            streaming=d.hf_streaming,
            columns=d.hf_columns,
            prompt=d.hf_prompt,
            formatting=d.hf_formatting,
        )
        if data_dir is not None:
            opts.setdefault("extract_images_to", str(data_dir / "images"))
    if fmt == "jsonl":
        opts.setdefault("known_tasks", TASKS.names())
    if "task" in params:
        opts.setdefault("task", d.task)  # readers that can produce several tasks follow data.task
    return opts


def read_files(cfg: RunConfig, path: str, data_dir: Path | None = None) -> list[Example]:
    """Read one data file (or folder; for data.source=hf, one split of the dataset) with the configured reader:
    at most data.limit records, then a seeded sample of data.sample of them (stratified by target, spread over
    the groups, file order kept)."""
    d = cfg.data
    try:
        if d.source == "hf":
            reader = FORMATS.get("hf")(d.hf_name, split=path, **reader_options(cfg, data_dir))
            path = f"{d.hf_name} [{path}]"
        else:
            if not Path(path).exists():
                raise DataError(
                    "not found",
                    file=path,
                    fix="check data.path / data.train / data.val / data.test "
                    "(paths are relative to where vlmtune runs)",
                )
            reader = FORMATS.get(d.format)(path, **reader_options(cfg, data_dir))
        examples = list(itertools.islice(reader, d.limit) if d.limit else reader)
    except (IsADirectoryError, NotADirectoryError, PermissionError, UnicodeDecodeError) as e:
        kind = "a folder" if Path(path).is_dir() else "a file"
        raise DataError(
            f"the '{d.format}' reader cannot read {kind} here ({type(e).__name__}: {e})",
            file=path,
            fix="give the file or folder data.format expects (docs/formats.md), or set data.format to match it",
        ) from None
    if not examples:
        raise DataError("holds no records", file=path, fix="check that it is the right file and that it is not empty")
    if getattr(reader, "rejected", 0):
        log.info(f"[data] {path}: {reader.rejected} invalid record(s) skipped -> {reader.rejects_path}")
    if d.sample and len(examples) <= d.sample:
        log.info(f"[data] {path}: data.sample={d.sample} but only {len(examples)} record(s) read; keeping them all")
    elif d.sample:
        from vlmtune.data.splits import sample_examples

        n_read = len(examples)
        examples, how = sample_examples(examples, d.sample, seed=d.seed)
        log.info(
            f"[data] {path}: sampled {len(examples)} of the {n_read} records read (data.sample={d.sample}, "
            f"seed {d.seed}, {how})"
        )
    return examples


def prepare_data(cfg: RunConfig, run_dir: Path, *, mark_done: bool = True) -> dict[str, list[Example]]:
    """Produce train/val/test Examples and write the exact splits to run_dir/data/, then (with `mark_done`) the
    manifest that marks the data stage complete; the pipeline marks it itself after its own checks and teaching."""
    from vlmtune.data.splits import check_no_leakage, split_counts, split_examples

    d = cfg.data
    data_dir = run_dir / "data"
    if d.source == "synth":
        from vlmtune.data.synth import synthesize

        src = synthesize(
            d.task, d.n, data_dir / "source", seed=d.seed, image_size=d.image_size, options=d.synth_options
        )
        examples = load_jsonl(src, known_tasks=TASKS.names())
        splits = split_examples(examples, d.split, seed=d.seed, stratify=d.stratify)
    elif d.path or (d.source == "hf" and not d.test):
        examples = read_files(cfg, d.hf_split if d.source == "hf" or d.path is None else d.path, data_dir)
        if d.dedup == "group":
            examples, merged = merge_near_duplicates(examples, d.dedup_distance)
            groups = len({e.group if e.group is not None else e.id for e in examples})
            log.info(
                f"[data] data.dedup=group: {merged} merge(s) of groups with near-duplicate images (distance <= "
                f"{d.dedup_distance}) leave {groups} group(s) of {len(examples)} examples"
            )
        splits = split_examples(examples, d.split, seed=d.seed, stratify=d.stratify)
    else:
        splits = {name: (read_files(cfg, getattr(d, name), data_dir) if getattr(d, name) else []) for name in SPLITS}
        if d.dedup == "group":
            log.warning(
                "[data] data.dedup=group cannot regroup splits that were made before (data.train/val/test); "
                "the pairs are reported instead"
            )
    for name in SPLITS:
        splits.setdefault(name, [])
    if d.augment:
        from vlmtune.data.augment import augment_split

        extra = augment_split(splits["train"], data_dir / "augmented", split_name="train", seed=d.seed, **d.augment)
        splits["train"] = splits["train"] + list(extra)
        log.info(f"[data] {len(extra)} augmented copies added to the train split only ({d.augment})")
    check_no_leakage(splits)
    if d.source == "synth":
        # The generator gives identical drawings one group; its look-alike drawings (one small shape in the same
        # cell) defeat perceptual hashes, so the image check would report pairs that are not duplicates.
        log.info("[data] near-duplicate image check skipped for the shapes world: identical drawings share a group")
    else:
        check_near_duplicates(splits, d.dedup, d.dedup_distance, data_dir)
    for name, exs in splits.items():
        wrong = [e.id for e in exs if e.task != d.task]
        if wrong:
            raise ConfigError(
                f"data.task is '{d.task}' but {len(wrong)} {name} records have another task "
                f"(e.g. '{wrong[0]}'). Fix: set data.task to match the data"
            )
    if not splits["train"] or not splits["test"]:
        raise ConfigError(
            "the train and test splits must both be non-empty. Fix: check data.split / data.train / "
            "data.test (and that data.n or the files hold enough records)"
        )
    for name, exs in splits.items():
        write_jsonl(data_dir / f"{name}.jsonl", exs)
    counts = split_counts(splits)
    log.info(
        "[data] "
        + ", ".join(f"{k}: {len(v)}" for k, v in splits.items())
        + f"  (labels: {_labels_summary(counts.get('train', {}))})"
    )
    if mark_done:
        write_manifest(run_dir, splits)
    return splits


def check_near_duplicates(
    splits: dict[str, list[Example]], mode: str, max_distance: int, data_dir: Path
) -> list[DupPair]:
    """Find near-duplicate images across the splits, write them to data_dir/near_duplicates.json (the report
    reads it), log them, and stop when mode is "error"."""
    pairs = cross_split_pairs(splits, max_distance)
    atomic_write_json(
        data_dir / DEDUP_FILE,
        {"max_distance": max_distance, "mode": mode, "n_pairs": len(pairs), "pairs": [p.to_dict() for p in pairs]},
    )
    report_pairs(pairs, "warn" if mode == "group" else mode, max_distance, str(data_dir))
    return pairs


MANIFEST = "manifest.json"  # run_dir/data/manifest.json: split sizes, file hashes and label counts


def write_manifest(run_dir: Path, splits: dict[str, list[Example]]) -> None:
    """run_dir/data/manifest.json, written last: its presence marks the data stage complete (a resume reuses
    the splits)."""
    from vlmtune.data.splits import split_counts

    data_dir = run_dir / "data"
    atomic_write_json(
        data_dir / MANIFEST,
        {
            "splits": {k: len(v) for k, v in splits.items()},
            "files": {k: _sha256(data_dir / f"{k}.jsonl") for k in splits},
            "labels": split_counts(splits),
        },
    )


def data_done(run_dir: Path) -> bool:
    """Whether run_dir holds a complete data stage (its manifest, written after the splits)."""
    return (run_dir / "data" / MANIFEST).exists()


def _labels_summary(counts: dict, most: int = 12) -> str:
    """Label counts for one log line: the most common `most`, then how many more (all are in the manifest)."""
    labels = {k: v for k, v in counts.items() if k not in ("total", "<other>")}
    if labels and max(labels.values()) == 1 and "<other>" in counts:  # open-ended targets: no label repeats
        return f"total: {counts.get('total', 0)}, open-ended targets (no label repeats)"
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k if len(k) <= 40 else k[:37] + '...'}: {v}" for k, v in items[:most])
    return text + (f", ... {len(items) - most} more labels (data/{MANIFEST})" if len(items) > most else "")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_splits(run_dir: Path, *, check_images: bool = True) -> dict[str, list[Example]]:
    return {
        n: load_jsonl(run_dir / "data" / f"{n}.jsonl", check_images=check_images)
        if (run_dir / "data" / f"{n}.jsonl").exists()
        else []
        for n in SPLITS
    }
