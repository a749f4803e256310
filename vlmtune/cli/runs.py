"""Verbs that run a recipe: quickstart, run, validate, train."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vlmtune.cli.common import Verb, print_summary
from vlmtune.errors import ConfigError

if TYPE_CHECKING:
    from vlmtune.config import RunConfig


def cmd_quickstart(a: argparse.Namespace) -> int:
    """Fine-tune the tiny built-in VLM on synthetic counting and report the gain (CPU, a few minutes).

    The same as `vlmtune run recipes/quickstart.yaml --overwrite` (--resume continues instead).

    Example: vlmtune quickstart
             vlmtune quickstart train.epochs=2 name=quickstart-short
    """
    from vlmtune.config import QUICKSTART_OVERRIDES, load_config
    from vlmtune.pipeline import run_pipeline

    cfg = load_config(None, [*QUICKSTART_OVERRIDES, *a.overrides])
    print_summary(run_pipeline(cfg, resume=a.resume, overwrite=not a.resume))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """Run a recipe end to end: data -> zero-shot eval -> fine-tune -> eval -> report.

    Example: vlmtune run recipes/quickstart.yaml
             vlmtune run recipes/quickstart.yaml name=q2 train.epochs=1 data.n=400   # CPU, ~1 minute
             vlmtune run recipes/seed004_cctv_llava15.yaml --smoke   # tiny LLaVA stand-in, a few records, CPU
    """
    from vlmtune.config import load_config
    from vlmtune.pipeline import run_pipeline

    cfg = load_config(a.recipe, a.overrides)
    if a.smoke:
        from vlmtune.smoke import smoke_config, smoke_skips

        skips = smoke_skips(cfg)
        cfg = smoke_config(cfg)
        run_pipeline(cfg, resume=False, overwrite=True)
        print(f"[smoke] every stage of {a.recipe} ran; see {cfg.run_dir}")
        for skip in skips:
            print(f"[smoke] skipped here: {skip}")
        return 0
    print_summary(run_pipeline(cfg, resume=a.resume, overwrite=a.overwrite))
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """Check a recipe (keys, types, choices, task) without running anything.

    Example: vlmtune validate recipes/quickstart.yaml
    """
    from vlmtune.config import dump_yaml, load_config
    from vlmtune.pipeline import check_recipe

    cfg = load_config(a.recipe, a.overrides)
    check_recipe(cfg, require_extras=False)
    print(dump_yaml(cfg), end="")
    print(f"OK: {a.recipe} is valid")
    for line in readiness_notes(cfg):
        print(line)
    return 0


def readiness_notes(cfg: RunConfig) -> list[str]:
    """What a valid recipe still needs on this machine (data files, the model's family, every optional extra):
    notes, not errors: the recipe may be meant for another machine."""
    from vlmtune.extras import install_hint, installed, missing_modules
    from vlmtune.models.families import family_of
    from vlmtune.pipeline import needed_extras
    from vlmtune.smoke import SMOKE_SKIPS_EXTRAS
    from vlmtune.tasks import build_task

    notes = []
    if cfg.data.source == "hf" and (cfg.data.hf_name is None or not Path(cfg.data.hf_name).is_dir()):
        notes.append(
            f"note: data.hf_name {cfg.data.hf_name} is read from the hub, or offline from the local Hugging "
            "Face cache (`hf download NAME --repo-type dataset` fills it)"
        )
    elif cfg.data.source != "synth":
        for key in ("path", "train", "val", "test"):
            value = getattr(cfg.data, key)
            if value and not Path(value).exists():
                notes.append(
                    f"note: data.{key} {value} is not on this machine: `vlmtune run` would stop there "
                    "(`--smoke` uses shapes-world records of the task instead)"
                )
    name = cfg.model.name
    if name != "tiny":
        try:
            notes.append(f"model: {name} -> family {family_of(name)} (`--smoke` uses its tiny stand-in)")
        except ConfigError:
            if not Path(name).exists():
                notes.append(
                    f"note: cannot tell the family of {name}: `--smoke` needs model.name to be a hub id "
                    "or directory of a known family (`vlmtune ls`)"
                )
    for extra, why in needed_extras(cfg, build_task(cfg.data.task, cfg.data.task_options)):
        if not installed(extra):
            smoke = "; `--smoke` runs without it" if extra in SMOKE_SKIPS_EXTRAS else ""
            notes.append(
                f"note: {why} needs {', '.join(missing_modules(extra))} (the '{extra}' extra), which is "
                f"not installed here: `vlmtune run` would stop at once{smoke}. Fix: {install_hint(extra)}"
            )
    return notes


def cmd_train(a: argparse.Namespace) -> int:
    """Fine-tune only (no evaluation stages): writes runs/<name>/ with config.yaml, data/ and adapter/ (or model/).

    An existing run follows the same rules as `vlmtune run`: --resume continues it (its settings checked
    against its config.yaml), --overwrite replaces it; `vlmtune run --resume` adds the evaluations later.

    Example: vlmtune train recipes/quickstart.yaml name=train-only train.epochs=1
    """
    from vlmtune.config import load_config
    from vlmtune.distributed import is_main_process
    from vlmtune.pipeline import run_pipeline

    cfg = load_config(a.recipe, a.overrides)
    res = run_pipeline(cfg, resume=a.resume, overwrite=a.overwrite, train_only=True)
    if is_main_process():  # under torchrun / accelerate launch, one line, not one per rank
        if res.get("kept"):
            print(f"kept the finished training in {res['output_dir']}")
        else:
            print(f"trained {res['steps']} steps in {res['train_seconds']:.0f}s -> {res['output_dir']}")
    return 0


def add_verbs(verb: Verb) -> None:
    p = verb("quickstart", cmd_quickstart, "the whole pipeline on the built-in data and tiny model (CPU)")
    p.add_argument("--resume", action="store_true", help="continue runs/quickstart instead of replacing it")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    for name, fn, help in [
        ("run", cmd_run, "run a recipe end to end"),
        ("validate", cmd_validate, "check a recipe without running it"),
        ("train", cmd_train, "fine-tune only"),
    ]:
        p = verb(name, fn, help)
        p.add_argument("recipe", help="a recipe YAML, e.g. recipes/quickstart.yaml")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.epochs=3 model.name=DIR")
        if name in ("run", "train"):
            p.add_argument(
                "--resume",
                action="store_true",
                help="keep finished stages, continue from the last complete checkpoint (changed settings "
                "are checked against the run's config.yaml)",
            )
            p.add_argument(
                "--overwrite",
                action="store_true",
                help="replace an existing run directory (the earlier run stays until the new one's data is ready)",
            )
        if name == "run":
            p.add_argument(
                "--smoke",
                action="store_true",
                help="check the recipe on CPU: a tiny stand-in of the model's architecture family, a "
                "few records, two steps; writes runs/<name>-smoke/",
            )
