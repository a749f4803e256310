"""The README stays true: its set-up commands, its CLI examples and its file tree match the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vlmtune.cli import build_parser, parse

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str = "bash") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_two_setup_commands_come_first_and_ci_runs_the_second():
    first = _blocks()[0].strip().splitlines()
    assert len(first) == 2, first
    install_run, install_test = first
    assert install_run.endswith("vlmtune quickstart") and "scripts/setup.sh" in install_run
    assert "setup.sh test" in install_test and install_test.endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_test in ci.splitlines(), "'.ci/run' must run the README's test command verbatim"
    assert "set -euo pipefail" in ci
    assert README.index(install_run) < README.index("## What the quickstart does")


def _vlmtune_commands() -> list[str]:
    cmds = []
    for block in _blocks():
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("vlmtune "):
                cmds.append(line)
    return cmds


@pytest.mark.parametrize("cmd", _vlmtune_commands())
def test_every_readme_command_parses(cmd):
    args = parse(build_parser(), shlex.split(cmd)[1:])
    assert callable(args.fn)


def test_verb_docstrings_hold_commands_that_parse():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    for name, p in sub.choices.items():
        text = (p.description or "").replace("\\\n", " ")  # join shell line continuations
        examples = re.findall(r"(?:Example:|^)\s+(vlmtune [^\n]*)", text, flags=re.M)
        assert examples, f"verb {name} has no example in its docstring"
        for ex in examples:
            parser.parse_args(shlex.split(ex.split("  #")[0])[1:])


def test_layout_tree_names_files_that_exist():
    tree = README.split("## Layout", 1)[1].split("```")[1]
    stack: list[tuple[int, str]] = []
    checked = 0
    for line in tree.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.strip().split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([s for _, s in stack] + [name.rstrip("/")])
        assert (ROOT / path).exists(), f"README tree names {path}, which does not exist"
        checked += 1
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
    assert checked > 20
    # And every module of the package appears in the tree.
    for py in (ROOT / "vlmtune").rglob("*.py"):
        rel = py.relative_to(ROOT / "vlmtune")
        if py.name == "__init__.py" and rel.parent != Path("data/synth"):
            continue
        # plugin folders (one file per task, metric family or model family) are named by their folder line
        if py.name == "__main__.py" or rel.parts[0] in ("tasks", "metrics") or rel.parts[:2] == ("models", "families"):
            continue
        assert str(rel.name) in tree, f"vlmtune/{rel} is missing from the README tree"
