"""The command line: one function per verb, no logic of its own. `vlmtune VERB --help` shows each verb's example.

    vlmtune quickstart
    vlmtune run recipes/quickstart.yaml train.epochs=3
    vlmtune eval --model tiny --data runs/quickstart/data/test.jsonl --task count --out runs/base-eval
    vlmtune compare runs/quickstart/zero_shot runs/quickstart/finetuned --out runs/cmp
    vlmtune export runs/quickstart --merge --out exports/quickstart-merged
    vlmtune score --task count --data test.jsonl --predictions other_system.jsonl --out runs/other

Verbs live in one module per group (runs, evaluation, models, data); each has `add_verbs(verb)`. A new group is a
new module here plus its name in VERB_GROUPS.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from vlmtune.errors import VlmtuneError

VERB_GROUPS = ("runs", "evaluation", "models", "data", "interact", "teach", "memory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmtune",
        description="Fine-tune a vision-language model (or a text "
        "LLM) on your task and measure, with numbers you can trust, whether it "
        "worked. Start with `vlmtune quickstart` (CPU, a few minutes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vlmtune VERB --help` for a verb's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"vlmtune {__import__('vlmtune').__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help, description=fn.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.set_defaults(fn=fn)
        p.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="only the results, warnings and errors (no progress bars or stage logs)",
        )
        return p

    for group in VERB_GROUPS:
        importlib.import_module(f"vlmtune.cli.{group}").add_verbs(verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from vlmtune import logs
    from vlmtune.distributed import is_main_process

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault(
        "HF_HUB_DISABLE_PROGRESS_BARS", "1"
    )  # transformers' own bars (loading weights, writing shards)
    # On CPU, bitsandbytes says at import that an optional kernels package is missing; its CPU path works
    # without it, so the message only alarms users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    args = parse(build_parser(), argv)
    # Under a launcher only rank 0 talks; -q keeps warnings, errors and the results on stdout.
    logs.setup(quiet=getattr(args, "quiet", False) or not is_main_process())
    try:
        return args.fn(args)
    except VlmtuneError as e:
        print(f"vlmtune: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        if e.filename is None:
            raise
        # A path the user gave that a library opened before vlmtune could check it.
        print(
            f"vlmtune: error: {e.filename}: {e.strerror}. Fix: check the path (and that it is a file where a "
            "file is expected)",
            file=sys.stderr,
        )
        return 2


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, with options and key=value overrides in any order: argparse stops filling a verb's
    `overrides` at the first option, so key=value words after an option are collected here."""
    args, rest = parser.parse_known_args(argv)
    extra = [r for r in rest if "=" in r and not r.startswith("-")]
    if extra and hasattr(args, "overrides") and len(extra) == len(rest):
        args.overrides = [*args.overrides, *extra]
    elif rest and isinstance(getattr(args, "evals", None), list) and not any(r.startswith("-") for r in rest):
        args.evals = [*args.evals, *rest]  # `compare A --out X B`: the directories after an option
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


if __name__ == "__main__":
    sys.exit(main())
