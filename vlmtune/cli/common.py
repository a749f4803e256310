"""What several verbs share: model arguments, key=value options, the run summary on stdout."""

from __future__ import annotations

import argparse
from typing import Any

from vlmtune.errors import ConfigError

Verb = Any  # the `verb(name, fn, help) -> ArgumentParser` adder that vlmtune.cli.build_parser passes around


def print_summary(summary: dict) -> None:
    """The run's results on stdout (progress and logs went to stderr)."""
    if "mcnemar" in summary:
        from vlmtune.report import format_summary

        print(format_summary(summary))
    if summary.get("memory"):
        from vlmtune.memory.experiment import on_vs_off_line

        print(on_vs_off_line(summary["memory"]))


def model_config(a: argparse.Namespace) -> Any:
    from vlmtune.config import ModelConfig

    return ModelConfig(name=a.model, load_in_4bit=a.load_in_4bit, dtype=a.dtype, device=a.device)


def key_values(pairs: list[str], flag: str) -> dict:
    """key=value strings (values parsed as YAML) -> a dict; e.g. --task-option labels=[cat,dog]."""
    import yaml

    opts = {}
    for o in pairs:
        if "=" not in o:
            raise ConfigError(f"{flag} '{o}' must look like key=value (e.g. {flag} labels=[cat,dog])")
        k, v = o.split("=", 1)
        opts[k] = yaml.safe_load(v)
    return opts


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="'tiny', a local directory, or a hub id (default: tiny)")
    p.add_argument("--adapter", help="a PEFT adapter directory, e.g. runs/quickstart/adapter")
    p.add_argument("--load-in-4bit", action="store_true", help="load the base in 4-bit nf4 (bitsandbytes)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--max-new-tokens", type=int, default=16)


def config_flags(p: argparse.ArgumentParser, section: str, names: list[str]) -> None:
    """One flag per config field (`--api-key-env` for eval.api_key_env), typed and documented as the field is in
    vlmtune/config/sections.py; defaults stay unset (None), so that the field's own default applies."""
    import dataclasses
    import typing

    from vlmtune.config import CHOICES, SECTIONS

    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f, typ = fields[name], hints[name]
        inner = [a for a in typing.get_args(typ) if a is not type(None)]
        kind = inner[0] if inner else typ
        default = f.default if f.default is not dataclasses.MISSING else None
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            choices=CHOICES.get((section, name)),
            default=None,
            help=f"{section}.{name}: {f.metadata['help']} (default: {default!r})",
        )


def config_from_flags(a: argparse.Namespace, section: str, **values: Any) -> Any:
    """The section's config: its defaults, then `values`, then every flag given on the command line."""
    import dataclasses

    from vlmtune.config import SECTIONS

    cls = SECTIONS[section]
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(cls) if getattr(a, f.name, None) is not None}
    return cls(**{**values, **given})


def task_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="key=value",
        help="a task option, value parsed as YAML (repeatable; `vlmtune ls` lists each task's), "
        "e.g. --task-option labels=[cat,dog]",
    )
