"""Deliberate breaks: each is a small patch to a temporary copy of the repository that must make a named test fail.

    python scripts/breaks.py              # every break; prints the table break -> tests -> failed
    python scripts/breaks.py --only a,e   # some breaks
    python scripts/breaks.py --list       # the breaks, their patches and their tests

The copy holds the tracked (and untracked, not ignored) files of the working tree. The named tests first run once
on the unbroken copy (they must pass there, or the break's result means nothing); then, per break, the patch is
applied, the break's tests run, and the patched files are restored. A patch whose text no longer occurs where the
break expects it stops the script with an error, so a break cannot silently become a no-op after the code moves.
The table is printed as Markdown and written to build/breaks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NO_SWITCH = """\
import vlmtune.processing as p
switch, p.special_tokens_kw = p.special_tokens_kw, lambda *a, **k: {}  # BREAK: the tokenizer's BOS always added
try:
    {line}
finally:
    p.special_tokens_kw = switch
"""


def _without_bos_switch(line: str, indent: str) -> str:
    """`line` run with the one-BOS switch (processing.special_tokens_kw) turned off, at `indent`."""
    return "\n".join(indent + s if s else s for s in NO_SWITCH.replace("{line}", line).splitlines())


@dataclass(frozen=True)
class Edit:
    path: str  # a file, or a glob under the repository (then every match is edited)
    old: str
    new: str
    exactly_once: bool = True


@dataclass(frozen=True)
class Break:
    key: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


GEN_LINE = "enc = to_model(encode_texts(processor, texts, images, padding=True), model)"
SCORE_LINE = "return to_model(encode_texts(processor, [text], [images]), model)"

BREAKS = [
    Break(
        "a",
        "`--resume` ignores the checkpoint and retrains from step 0",
        (
            Edit(
                "vlmtune/train/trainer.py",
                "last = last_complete_checkpoint(checkpoints_dir(args)) if resume else None",
                "last = None  # BREAK",
            ),
        ),
        ("tests/test_resume.py",),
    ),
    Break(
        "b",
        "the pipeline skips the split leakage check",
        (Edit("vlmtune/data/prepare.py", "    check_no_leakage(splits)\n", "    pass  # BREAK: no leakage check\n"),),
        (
            "tests/test_leakage_cli.py::test_a_group_in_two_splits_stops_run_and_train",
            "tests/test_leakage_cli.py::test_an_augmented_copy_across_splits_stops_the_run",
        ),
    ),
    Break(
        "c1",
        "`evaluate()` skips the dialog answer-leak check",
        (Edit("vlmtune/eval/run.py", "        task.check_example(ex)\n", "        pass  # BREAK\n"),),
        (
            "tests/test_leakage_cli.py::test_vlmtune_eval_refuses_a_leaking_dialogue",
            "tests/test_leakage_cli.py::test_vlmtune_run_refuses_a_leaking_dialogue",
        ),
    ),
    Break(
        "c2",
        "`vlmtune score` skips the dialog answer-leak check",
        (Edit("vlmtune/eval/external.py", "        task.check_example(ex)\n", "        pass  # BREAK\n"),),
        ("tests/test_leakage_cli.py::test_vlmtune_score_refuses_a_leaking_dialogue",),
    ),
    Break(
        "d",
        'every "95%" interval computed as a 90% interval (every `alpha` default 0.05 -> 0.10)',
        (Edit("vlmtune/**/*.py", "alpha: float = 0.05", "alpha: float = 0.10", exactly_once=False),),
        (
            "tests/test_stats.py::test_wilson_holds_at_zero_and_n",
            "tests/test_stats.py::test_design_effect_intervals_cover_clustered_proportions",
            "tests/test_metrics.py",
        ),
    ),
    Break(
        "e",
        'a "paired" bootstrap that resamples the two systems independently',
        (
            Edit(
                "vlmtune/stats/paired.py",
                "reps = mean_replicates(d, cl, n_boot, seed)",
                "reps = mean_replicates(b, cl, n_boot, seed) - mean_replicates(a, cl, n_boot, seed + 1)  # BREAK",
            ),
        ),
        (
            "tests/test_stats.py::test_paired_bootstrap_agrees_with_the_paired_t_interval_where_pairing_matters",
            "tests/test_stats.py::test_paired_cluster_bootstrap_covers_the_difference",
        ),
    ),
    Break(
        "f1",
        "`generate()` without the one-BOS switch (two BOS tokens where the template writes one)",
        (
            Edit(
                "vlmtune/infer/generate.py",
                "        " + GEN_LINE + "\n",
                _without_bos_switch(GEN_LINE, "        ") + "\n",
            ),
        ),
        ("tests/test_families.py::test_one_bos_in_training_generation_and_option_scoring",),
    ),
    Break(
        "f2",
        "option scoring without the one-BOS switch",
        (Edit("vlmtune/infer/score.py", "    " + SCORE_LINE + "\n", _without_bos_switch(SCORE_LINE, "    ") + "\n"),),
        ("tests/test_families.py::test_one_bos_in_training_generation_and_option_scoring",),
    ),
    Break(
        "g",
        "logged `loss_tokens_per_batch` counts masked tokens (every attended token)",
        (
            Edit(
                "vlmtune/train/trainer.py",
                'self._loss_tokens += int((inputs["labels"] != -100).sum())',
                'self._loss_tokens += int(inputs["attention_mask"].sum())  # BREAK',
            ),
        ),
        ("tests/test_loss_tokens.py::test_logged_loss_tokens_equal_a_hand_count",),
    ),
    Break(
        "h",
        "the LoRA step after 4-bit (and 8-bit) loading is a backward pass with no optimizer step",
        (
            Edit(
                "tests/test_families.py",
                "    opt.step()  # a real optimizer step",
                "    pass  # BREAK: no opt.step(); was",
            ),
        ),
        ("tests/test_families.py::test_quantized_load_lora_and_generate_on_cpu",),
    ),
]


def copy_repo(dest: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)


def apply(copy: Path, br: Break) -> dict[Path, str]:
    """Apply the break's edits; returns the original text of every changed file."""
    saved: dict[Path, str] = {}
    for e in br.edits:
        paths = sorted(copy.glob(e.path)) if any(c in e.path for c in "*?[") else [copy / e.path]
        hits = 0
        for p in paths:
            text = saved.get(p, p.read_text(encoding="utf-8"))
            n = text.count(e.old)
            if n:
                saved.setdefault(p, text)
                p.write_text(p.read_text(encoding="utf-8").replace(e.old, e.new), encoding="utf-8")
            hits += n
        if hits == 0 or (e.exactly_once and hits != 1):
            restore(saved)
            raise SystemExit(
                f"break {br.key}: {e.old!r} occurs {hits} time(s) in {e.path}, expected "
                f"{'exactly once' if e.exactly_once else 'at least once'}; update scripts/breaks.py"
            )
    return saved


def restore(saved: dict[Path, str]) -> None:
    for p, text in saved.items():
        p.write_text(text, encoding="utf-8")


def run_tests(copy: Path, tests: list[str], tag: str) -> tuple[int, list[str], list[str]]:
    """pytest on `tests` in the copy: (exit code, failed test ids, passed test ids), from its JUnit report."""
    xml = copy / f"junit-{tag}.xml"
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLMTUNE_CACHE": str(copy / ".cache"),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", f"--junitxml={xml}", *tests]
    rc = subprocess.run(cmd, cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    failed, passed = [], []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname', '').split('.')[-1]}.py::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
            elif case.find("skipped") is None:
                passed.append(name)
    return rc, failed, passed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated break keys (default: all)")
    ap.add_argument("--list", action="store_true", help="print the breaks and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    a = ap.parse_args()
    chosen = [b for b in BREAKS if not a.only or b.key in a.only.split(",")]
    if a.list:
        for b in chosen:
            print(f"{b.key}: {b.what}\n  patch {', '.join(e.path for e in b.edits)}\n  tests {' '.join(b.tests)}")
        return 0
    copy = Path(tempfile.mkdtemp(prefix="vlmtune-breaks-"))
    try:
        copy_repo(copy)
        for b in chosen:  # every patch must still apply before anything runs
            restore(apply(copy, b))
        union = list(dict.fromkeys(t for b in chosen for t in b.tests))
        print(f"[breaks] unbroken copy: {len(union)} test target(s)", flush=True)
        rc, failed, passed = run_tests(copy, union, "clean")
        if rc != 0 or failed:
            print(f"[breaks] the named tests fail on the unbroken copy ({failed or f'pytest exit {rc}'}); stopping")
            return 1
        print(f"[breaks] unbroken copy: {len(passed)} test(s) pass", flush=True)
        rows = ["| break | patched | tests run | failed | failing tests |", "|---|---|---|---|---|"]
        worst = 0
        for b in chosen:
            saved = apply(copy, b)
            try:
                rc, failed, passed = run_tests(copy, list(b.tests), b.key)
            finally:
                restore(saved)
            caught = bool(failed) or rc not in (0, 5)
            worst |= not caught
            files = ", ".join(sorted({str(p.relative_to(copy)) for p in saved}))
            shown = "<br>".join(f"`{f}`" for f in failed) or (f"pytest exit {rc}" if rc else "")
            rows.append(
                f"| ({b.key}) {b.what} | {files} | {len(failed) + len(passed)} | "
                f"{'yes' if caught else '**no**'} | {shown} |"
            )
            print(rows[-1], flush=True)
        table = "\n".join(rows) + "\n"
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / "build" / "breaks.md").write_text(table, encoding="utf-8")
        print("\n" + table)
        return 1 if worst else 0
    finally:
        if a.keep:
            print(f"[breaks] copy kept at {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
