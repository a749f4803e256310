"""Mutation testing of the modules whose bugs would corrupt results, with mutmut; run through scripts/mutation.sh.

    bash scripts/mutation.sh                 # every group below
    bash scripts/mutation.sh stats splits    # some groups
    bash scripts/mutation.sh --list          # the groups, their functions and their tests

Each group runs in its own copy of the repository (build/mutation/<group>/, the tracked files only) with its own
mutmut configuration: the files to mutate, the functions whose mutants are run (mutmut names, globs) and the test
subset that should catch them. mutmut first runs that subset once to learn which tests reach which function, then
runs each mutant against the tests that reach it (stopping at the first failure). The summary per group (mutants by
status; score = (killed + timeout) / (killed + timeout + survived + no tests), timeouts counted as kills as mutmut
counts them) is printed as a Markdown table and written to build/mutation/summary.md, every survivor's diff to
build/mutation/survivors.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "mutation"

# name: (files mutmut mutates, mutant-name globs that are run, the test subset)
GROUPS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "stats": (["vlmtune/stats/*"], ["vlmtune.stats.*"], ["tests/test_metrics.py", "tests/test_stats.py"]),
    "ranking": (
        ["vlmtune/metrics/ranking.py"],
        ["vlmtune.metrics.ranking.*"],
        ["tests/test_ranking.py", "tests/test_ranking_edges.py", "tests/test_properties.py"],
    ),
    "parse-count": (
        ["vlmtune/tasks/count.py"],
        [
            f"vlmtune.tasks.count.x_{f}__mutmut_*"
            for f in (
                "_native_forms",
                "_sino_forms",
                "_after_counter",
                "_is_none_after",
                "_korean",
                "_english",
                "parse_count",
            )
        ],
        ["tests/test_parsing.py", "tests/test_parse_edges.py", "tests/test_properties.py"],
    ),
    "parse-label": (
        ["vlmtune/tasks/classify.py"],
        [f"vlmtune.tasks.classify.x_{f}__mutmut_*" for f in ("normalize", "_label_pattern", "_compile", "parse_label")],
        ["tests/test_parsing.py", "tests/test_parse_edges.py", "tests/test_properties.py"],
    ),
    "parse-option": (
        ["vlmtune/tasks/mcq_parse.py"],
        [
            f"vlmtune.tasks.mcq_parse.x_{f}__mutmut_*"
            for f in (
                "_casefold_keep_length",
                "_core",
                "_option_patterns",
                "_text_spans",
                "_markers",
                "_with_echo",
                "_stated_answers",
                "parse_option",
                "exact_match",
            )
        ],
        ["tests/test_mcq.py", "tests/test_parsing.py", "tests/test_parse_edges.py", "tests/test_properties.py"],
    ),
    "loss-mask": (
        ["vlmtune/train/collate.py"],
        ["vlmtune.train.collate.*"],
        [
            "tests/test_collate.py",
            "tests/test_loss_tokens.py",
            "tests/test_families.py::test_load_render_and_loss_mask",
            "tests/test_families.py::test_one_bos_in_training_generation_and_option_scoring",
        ],
    ),
    "splits": (
        ["vlmtune/data/splits.py"],
        ["vlmtune.data.splits.*"],
        ["tests/test_splits.py", "tests/test_sample.py", "tests/test_properties.py"],
    ),
    "dialog-leak": (
        ["vlmtune/tasks/dialog.py"],
        [
            f"vlmtune.tasks.dialog.x_{f}__mutmut_*"
            for f in ("_target", "_normalize_markers", "_contains_phrase", "check_no_leak", "check_target")
        ],
        ["tests/test_dialog.py", "tests/test_leak_rules.py"],
    ),
    "resume": (
        ["vlmtune/train/trainer.py", "vlmtune/train/checkpoints.py"],
        [
            "vlmtune.train.checkpoints.*",
            "vlmtune.train.trainer.xǁEpochLengthSamplerǁ*",
            "vlmtune.train.trainer.xǁVlmTrainerǁ_length_sampler__mutmut_*",
            "vlmtune.train.trainer.xǁVlmTrainerǁ_get_train_sampler__mutmut_*",
        ],
        [
            "tests/test_checkpoints.py",
            "tests/test_resume.py",
            "tests/test_train.py::test_same_seed_same_adapter_and_resume_is_exact",
        ],
    ),
    # The pipeline's stage resume: only end-to-end `vlmtune run` tests reach it (about a minute per mutant).
    "resume-pipeline": (
        ["vlmtune/pipeline.py"],
        ["vlmtune.pipeline.x__stages__mutmut_*", "vlmtune.pipeline.x_setup_data__mutmut_*"],
        [
            "tests/test_resume.py::test_vlmtune_run_resume_continues_an_interrupted_training",
            "tests/test_cli.py::test_resume_keeps_finished_stages",
        ],
    ),
}

KILLED = ("killed", "timeout", "caught by type check")

# Lines that only build the text of an error, a warning or a log line are not mutated: the text cannot change a
# result (the conditions that raise are on other lines, and are mutated). Tests still check the errors' key words.
MESSAGE_LINES = [
    r"^\s*raise \w+(Error|Exception)\(",  # raise DataError(f"...", ...
    r"^\s*(file|field|fix|line)=",  # its keyword-argument continuation lines
    r"^\s*f?(\"|')[^\"']*(\"|')\s*[,)]*\s*$",  # a message's continuation text alone on its line
    r"^\s*(log\.(debug|info|warning|error)|warnings\.warn)\(",
]


def copy_repo(dest: Path) -> None:
    """The tracked files (and untracked, not ignored ones) of the working tree, as they are now."""
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
    if dest.exists():
        shutil.rmtree(dest)
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def configure(dest: Path, files: list[str], tests: list[str]) -> None:
    """Append this group's [tool.mutmut] table to the copy's pyproject.toml."""
    existing = [t for t in tests if (dest / t.split("::")[0]).exists()]
    toml = (
        "\n[tool.mutmut]\n"
        + "\n".join(
            [
                'source_paths = ["vlmtune"]',
                f"only_mutate = {json.dumps(files)}",
                f"pytest_add_cli_args_test_selection = {json.dumps(existing)}",
                'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "mutation_order", "-W", "ignore"]',
                'also_copy = ["recipes", "configs", "scripts"]',
                'process_isolation = "forkserver"',  # torch is not fork-safe once its thread pools started
                "use_git_change_detection = false",
                f"do_not_mutate_patterns = {json.dumps(MESSAGE_LINES)}",
                # A mutant's wall-clock limit is (its tests' measured time + timeout_constant) * timeout_multiplier (mutmut's
                # rule). Each mutant's tests run in a fresh process, which rebuilds session fixtures (a micro model, data)
                # that the timing run built once: the constant covers that, so such tests are not cut off and counted as
                # kills, while a mutant that loops forever costs minutes, not mutmut's default of hours here.
                "timeout_constant = 30.0",
                "timeout_multiplier = 5.0",
            ]
        )
        + "\n"
    )
    with open(dest / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write(toml)


def statuses(dest: Path, globs: list[str]) -> dict[str, str]:
    """Mutant name -> status, for the mutants of this group (read from mutmut's .meta files)."""
    import fnmatch

    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for meta in (dest / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            if any(fnmatch.fnmatchcase(name, g) for g in globs):
                out[name] = status_by_exit_code[code]
    return out


def survivor_diffs(dest: Path, names: list[str]) -> str:
    parts = []
    for name in names:
        diff = subprocess.run(["mutmut", "show", name], cwd=dest, capture_output=True, text=True).stdout
        parts.append(f"### {name}\n\n```diff\n{diff.strip()}\n```\n")
    return "\n".join(parts)


def run_group(name: str, max_children: int) -> dict[str, str]:
    files, globs, tests = GROUPS[name]
    dest = OUT / name
    print(f"[mutation] {name}: copying the repository to {dest}", flush=True)
    copy_repo(dest)
    configure(dest, files, tests)
    # scripts/ on the path for the test-order plugin (scripts/mutation_order.py)
    path = os.pathsep.join(filter(None, [str(dest / "scripts"), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLMTUNE_CACHE": str(dest / ".cache"),
    }
    cmd = ["nice", "-n", "10", "mutmut", "run", "--max-children", str(max_children), *globs]
    print(f"[mutation] {name}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=dest, env=env, check=False)
    return statuses(dest, globs)


def table(results: dict[str, dict[str, str]]) -> str:
    rows = [
        "| group | mutants | killed | survived | no tests | timeout | other | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, st in results.items():
        vals = list(st.values())
        killed = sum(v in ("killed", "caught by type check") for v in vals)
        timeout = vals.count("timeout")
        survived, no_tests = vals.count("survived"), vals.count("no tests")
        other = len(vals) - killed - timeout - survived - no_tests
        judged = killed + timeout + survived + no_tests
        score = f"{100 * (killed + timeout) / judged:.1f}%" if judged else "n/a"
        rows.append(f"| {name} | {len(vals)} | {killed} | {survived} | {no_tests} | {timeout} | {other} | {score} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    ap.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    ap.add_argument("--report-only", action="store_true", help="summarize the last runs, run nothing")
    ap.add_argument("--list", action="store_true", help="print the groups and exit")
    a = ap.parse_args()
    if a.list:
        for name, (files, globs, tests) in GROUPS.items():
            print(f"{name}: mutate {', '.join(files)}\n  mutants {' '.join(globs)}\n  tests {' '.join(tests)}")
        return 0
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")
    names = a.groups or list(GROUPS)
    results = {}
    for name in names:
        dest = OUT / name
        results[name] = (
            statuses(dest, GROUPS[name][1]) if a.report_only and dest.exists() else run_group(name, a.max_children)
        )
    summary = table(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text(summary)
    survivors = {n: sorted(k for k, v in st.items() if v not in KILLED) for n, st in results.items()}
    (OUT / "survivors.md").write_text(
        "".join(f"## {n}\n\n{survivor_diffs(OUT / n, ks)}\n" for n, ks in survivors.items() if ks)
    )
    print(summary)
    print(f"[mutation] survivors and their diffs: {OUT / 'survivors.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
