"""The README's commands run, in the order a new user meets them, in a fresh folder.

Every shell command of the README's ```bash blocks is either run here (in-process through `vlmtune.cli.main`,
in a temporary folder holding a copy of `recipes/`, with VLMTUNE_CACHE at a temporary cache shared by the
session, so the tiny base is built once, by the first command), or listed in EXCLUDED with the reason and the
test that covers it instead. A README command that is in neither fails `test_every_readme_command_is_run_or_excluded`.

What is changed to keep the run short, and why (nothing else is):
- TRAINING_OVERRIDES are appended to the commands that train (quickstart, run, train): 40 examples and one
  epoch check that each command works end to end; the quickstart's accuracy figures come from the full run the
  README names, not from here.
- REPLACED arguments: `--n 560` of the memory generator (40 episodes of up to 500 turns; `memory embed` and
  `memory tune` over them take minutes) becomes `--n 8` (its smallest: 8 short episodes); `data inspect
  RECIPE --render` gets `--set data.n=40` (the quickstart recipe would synthesize 2,400 images first).
- USER_FILES: files a README command reads that a user brings (their own predictions, an image folder, a
  frames folder with labels.csv, a LLaMA-Factory dataset) are written, small, before the command runs.
- STDIN: `vlmtune chat` reads the lines typed in the README's chat transcript.

The commands depend on each other (the quickstart's run directory feeds eval, export, chat...), so each test
runs every earlier command first if it has not run yet; `-k` on one command still works.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

TRAINING_OVERRIDES = ["data.n=40", "train.epochs=1"]  # see the module docstring
TRAINING_VERBS = ("quickstart", "run", "train")

REPLACED = {
    "vlmtune data synth --task memory --n 560 --out data/shapes-memory": "vlmtune data synth --task memory --n 8 --out data/shapes-memory",
    "vlmtune data inspect recipes/quickstart.yaml --render 4": "vlmtune data inspect recipes/quickstart.yaml --render 4 --set data.n=40",
}

# (command prefix, why it is not run here, what covers it instead)
EXCLUDED = [
    (
        "vlmtune run recipes/seed001_visdial_connector.yaml$",
        "the seed's setting: VisDial, Llama-3.2-1B in 4-bit and 1024-d ImageBind vectors, none on this machine (GPU)",
        "its `--smoke` line, run here; tests/test_connector.py (training, reload, eval, export at a small size)",
    ),
    (
        "vlmtune run recipes/seed001_visdial_connector.yaml name=seed001-connector-nopos",
        "the seed's setting without the position embedding (GPU, data not here)",
        "tests/test_connector.py::test_connector_config_checks and the end-to-end run",
    ),
    (
        "vlmtune compare runs/seed001-connector-nopos/finetuned",
        "compares the two GPU runs above",
        "the three-run `compare` of the Commands block, run here",
    ),
    (
        "vlmtune run recipes/shapes_dialog_connector.yaml --overwrite",
        "the measured connector table: five full trainings of 13-29 min each on 2 cores",
        "tests/test_connector.py::test_run_end_to_end (the recipe's path at a small size) and "
        "::test_lora_ablation_saves_and_reloads",
    ),
    (
        "vlmtune run recipes/shapes_dialog.yaml --overwrite name=shapes-dialog-lora-images",
        "one of the connector table's trainings (full size)",
        "the shapes_dialog recipe's --smoke in tests/test_cli.py",
    ),
    (
        "python scripts/connector_table.py",
        "tabulates the connector table's runs above",
        "not run by a test itself; what it calls (vlmtune.stats' mcnemar_exact and paired_bootstrap, "
        "vlmtune.metrics.ranking) is tested in tests/test_stats.py and tests/test_ranking.py",
    ),
    (
        "python3 -m venv .venv && . .venv/bin/activate && bash scripts/setup.sh &&",
        "installs into a new venv (the tests run in an installed one); its `vlmtune quickstart` is the Commands "
        "block's first command, run here",
        "this test (quickstart)",
    ),
    (
        "python3 -m venv .venv && . .venv/bin/activate && bash scripts/setup.sh test &&",
        "installs and runs the whole suite",
        ".ci/run runs it verbatim (tests/test_readme.py checks that)",
    ),
    (
        "vlmtune teach data/dialog16/data.jsonl --backend local --model gemma3-270m",
        "the real Gemma-3 270M teacher: 1-2 min to dequantize on first use, then about 4 requests/min on 2 cores",
        "tests/test_teacher.py::test_local_backend_caches_and_resumes (local backend, micro model); "
        "tests/test_gguf.py (slow: the real gemma3-270m)",
    ),
    (
        "vlmtune teach data/dialog16/data.jsonl --backend openai",
        "needs an Ollama or vLLM server",
        "tests/test_teacher.py (a real HTTP server speaking the protocol: "
        "test_teach_exports_with_provenance_and_a_report and the fault cases)",
    ),
    (
        "vlmtune memory build --from locomo locomo10.json",
        "LoCoMo is not on this machine (no network)",
        "tests/test_memory_episodes.py::test_locomo_reader_builds_episodes_and_probes (a file in LoCoMo's format)",
    ),
    (
        "vlmtune chat gemma3-270m",
        "the real Gemma-3 270M: 1-2 min to dequantize on first use",
        "this test (`vlmtune chat tiny`); tests/test_gguf.py (slow: loads and generates with gemma3-270m)",
    ),
    (
        "vlmtune serve ",
        "a server that blocks until stopped",
        "tests/test_serve.py (a real process on a loopback port, the openai client and curl)",
    ),
    ("curl ", "needs `vlmtune serve` running", "tests/test_serve.py::test_curl_works_unchanged"),
    ("vlmtune ui ", "a web server that blocks until stopped", "tests/test_ui.py (chromium driven by Playwright)"),
    (
        "vlmtune data convert --format visdial visdial_1.0_val.json",
        "VisDial is not on this machine (no network)",
        "tests/test_formats.py (test_visdial_*: files in its format)",
    ),
    (
        "python scripts/hub_folder.py /tmp/cctv-check/cctv.jsonl",
        "a record of a measurement: reads /tmp/cctv-check from `scripts/cctv_dedup_check.py --frames 2000`",
        "tests/test_hf.py::test_local_hub_folder_simple_columns",
    ),
    (
        "vlmtune data convert --format hf /tmp/cctv-hub",
        "the same measurement's hub-layout folder",
        "tests/test_hf.py::test_local_hub_folder_simple_columns",
    ),
    (
        "HF_HUB_OFFLINE=1 vlmtune data convert --format hf demo/cctv",
        "needs the hub cache laid out by hand for the name demo/cctv",
        "tests/test_hf.py::test_by_name_offline_uses_the_cached_snapshot",
    ),
    (
        "vlmtune data split /tmp/cctv-check/cctv.jsonl",
        "the same measurement's 2,000 CCTV-like frames",
        "this test (`vlmtune data split data/forensic.jsonl`); tests/test_dedup.py",
    ),
    (
        "vlmtune data inspect /tmp/cctv-check/cctv-split/train.jsonl",
        "the same measurement's frames",
        "this test (`vlmtune data inspect`); tests/test_inspect.py",
    ),
    (
        "vlmtune run recipes/shapes_dialog_teacher.yaml name=teach-",
        "the three-way experiment: its teacher is the real Gemma-3 270M (about 30 min for 120 dialogues here)",
        "tests/test_teacher.py::test_a_recipes_teach_section_writes_the_train_split; "
        "tests/test_cli.py::test_every_recipe_passes_smoke[shapes_dialog_teacher.yaml]",
    ),
    (
        "vlmtune compare runs/teach-a/finetuned runs/teach-b/finetuned",
        "needs the three-way experiment's runs",
        "this test (`vlmtune compare`)",
    ),
    (
        "vlmtune run recipes/shapes_memory.yaml",
        "about 300 training steps on ~400-token reminders plus ten evaluations: hours on 2 cores",
        "tests/test_memory_episodes.py::test_shapes_memory_recipe_runs_end_to_end_and_records_why (stand-in model)",
    ),
    ("PYTHONPATH=. python benchmarks/memory.py", "a benchmark (needs the shapes_memory run)", "tests/test_memory*.py"),
    (
        "accelerate launch",
        "multi-GPU launch",
        "tests/test_ddp.py (2-process DDP on CPU: test_two_process_vlmtune_train_prepares_the_data_once)",
    ),
]


# --- the README's commands ----------------------------------------------------------------------------------


def _commands() -> list[str]:
    """Every command of the README's bash blocks, in order; a command continues over lines while a quote is open
    or a line ends with a backslash; `  # ...` comments are dropped."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        pending = ""
        for line in block.splitlines():
            if not pending:
                line = line.split("  #")[0]
            pending = f"{pending}\n{line}" if pending else line.strip()
            if not pending:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            try:
                shlex.split(pending)
            except ValueError:  # an open quote: the command goes on
                continue
            cmds.append(" ".join(pending.split()) if "'" not in pending else pending)
            pending = ""
        assert not pending, f"unterminated README command: {pending}"
    return cmds


def _matches(cmd: str, entry: str) -> bool:
    """An entry ending in "$" names one whole command; otherwise every command starting with it."""
    return cmd == entry[:-1] if entry.endswith("$") else cmd.startswith(entry)


def _excluded(cmd: str):
    return next((e for e in EXCLUDED if _matches(cmd, e[0])), None)


COMMANDS = _commands()
RUN = list(dict.fromkeys(c for c in COMMANDS if not _excluded(c)))  # a command met twice runs once


def test_every_readme_command_is_run_or_excluded():
    for cmd in COMMANDS:
        assert _excluded(cmd) or shlex.split(cmd)[0] == "vlmtune" or "=" in shlex.split(cmd)[0], (
            f"README command neither run by this test nor listed in EXCLUDED (with why): {cmd}"
        )
    unused = [e[0] for e in EXCLUDED if not any(_matches(c, e[0]) for c in COMMANDS)]
    assert not unused, f"EXCLUDED names commands the README no longer has: {unused}"
    assert not [r for r in REPLACED if r not in RUN], "REPLACED names commands the README no longer has"


# --- files a user brings ------------------------------------------------------------------------------------


def _other_system(ws: Path) -> None:
    """Predictions made elsewhere: here, a system that always answers 2."""
    rows = [json.loads(l) for l in (ws / "runs/quickstart/data/test.jsonl").read_text().splitlines() if l.strip()]
    (ws / "other_system.jsonl").write_text("".join(json.dumps({"id": r["id"], "prediction": "2"}) + "\n" for r in rows))


def _raw_data(ws: Path) -> None:
    """seed 003's layout: one folder per class, a numeric prefix on each folder name."""
    from PIL import Image

    for j, folder in enumerate(("0_irrelevant", "1_drug_use", "2_drug_trade", "3_drug_sample")):
        (ws / "raw_data" / folder).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 40), (20 * i, 60 * j, 90 + 10 * i)).save(ws / "raw_data" / folder / f"{i}.png")


def _frames(ws: Path) -> None:
    """seed 004's layout: frames/ and labels.csv (id,count)."""
    from PIL import Image

    (ws / "frames").mkdir()
    for i in range(1, 6):
        Image.new("RGB", (64, 48), (30 * i, 80, 120)).save(ws / "frames" / f"seq_{i:06d}.jpg")
    (ws / "labels.csv").write_text("id,count\n" + "".join(f"{i},{3 * i}\n" for i in range(1, 6)))


def _dataset_info(ws: Path) -> None:
    """A LLaMA-Factory dataset named `mine` (sharegpt formatting)."""
    from PIL import Image

    (ws / "lf_images").mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (32, 32), (50 * i, 90, 60)).save(ws / "lf_images" / f"{i}.jpg")
        rows.append(
            {
                "conversations": [
                    {"from": "human", "value": "<image>How many people are there?"},
                    {"from": "gpt", "value": str(i + 1)},
                ],
                "images": [f"lf_images/{i}.jpg"],
            }
        )
    (ws / "mine.json").write_text(json.dumps(rows))
    (ws / "dataset_info.json").write_text(
        json.dumps(
            {
                "mine": {
                    "file_name": "mine.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "images": "images"},
                    "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
                }
            }
        )
    )


USER_FILES = {  # command prefix -> writes the file it reads
    "vlmtune score --task count --data runs/quickstart/data/test.jsonl --predictions other_system.jsonl": _other_system,
    "vlmtune data convert --format imagefolder raw_data": _raw_data,
    "vlmtune data convert --format csv_labels labels.csv": _frames,
    "vlmtune data convert --format sharegpt dataset_info.json": _dataset_info,
}


def _typed_in_chat_transcript() -> str:
    transcript = README.split("**Terminal chat.**", 1)[1].split("```\nvlmtune chat:", 1)[1].split("```", 1)[0]
    return "".join(line[len("you> ") :] + "\n" for line in transcript.splitlines() if line.startswith("you> "))


STDIN = {"vlmtune chat tiny --adapter runs/quickstart/adapter": _typed_in_chat_transcript}


# --- running them ------------------------------------------------------------------------------------------


@dataclass
class Result:
    cmd: str
    argv: list[str]
    code: int | None
    out: str
    err: str
    seconds: float


@dataclass
class Workspace:
    root: Path
    cache: Path
    done: list[Result] = field(default_factory=list)

    def run_through(self, index: int) -> Result:
        while len(self.done) <= index:
            self.done.append(self._run(RUN[len(self.done)]))
        for r in self.done[:index]:
            if r.code != 0:
                pytest.fail(f"an earlier README command failed: {r.cmd}\n{r.err[-3000:]}")
        return self.done[index]

    def _run(self, cmd: str) -> Result:
        from vlmtune.cli import main

        words = shlex.split(REPLACED.get(cmd, cmd))
        env = {}
        while "=" in words[0]:
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        assert words[0] == "vlmtune", cmd
        argv = words[1:]
        if argv[0] in TRAINING_VERBS and "--smoke" not in argv:
            argv = [*argv, *TRAINING_OVERRIDES]
        prep = next((f for prefix, f in USER_FILES.items() if cmd.startswith(prefix)), None)
        stdin = next((f() for prefix, f in STDIN.items() if cmd.startswith(prefix)), "")
        out, err = io.StringIO(), io.StringIO()
        saved_env = {k: os.environ.get(k) for k in [*env, "VLMTUNE_CACHE"]}
        cwd, saved_stdin = os.getcwd(), sys.stdin
        os.environ.update({**env, "VLMTUNE_CACHE": str(self.cache)})
        os.chdir(self.root)
        sys.stdin = io.StringIO(stdin)
        t0 = time.time()
        try:
            if prep:
                prep(self.root)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as e:  # argparse errors
                    code = e.code if isinstance(e.code, int) else 2
                except Exception:  # a traceback is a failure too; keep it for the message
                    err.write(traceback.format_exc())
                    code = None
        finally:
            sys.stdin = saved_stdin
            os.chdir(cwd)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return Result(cmd, argv, code, out.getvalue(), err.getvalue(), time.time() - t0)


@pytest.fixture(scope="session")
def readme_cache(tmp_path_factory):
    """One VLMTUNE_CACHE for the session: the tiny base is built once, by the first command that needs it."""
    return tmp_path_factory.mktemp("vlmtune-cache")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, readme_cache):
    root = tmp_path_factory.mktemp("readme-user")
    shutil.copytree(ROOT / "recipes", root / "recipes")  # a new user runs the commands in the clone
    return Workspace(root, readme_cache)


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(RUN)), ids=[f"{i:02d}-{' '.join(c.split()[1:4])}" for i, c in enumerate(RUN)]
)
def test_readme_command_runs(index, workspace):
    r = workspace.run_through(index)
    assert r.code == 0, (
        f"README command failed (exit code {r.code}): {r.cmd}\n"
        f"run as: vlmtune {shlex.join(r.argv)}\nstderr:\n{r.err[-6000:]}"
    )
    check = CHECKS.get(r.cmd)
    if check:
        check(r, workspace.root)


# --- what the README says a command gives ------------------------------------------------------------------


def _ls_sections(r: Result, root: Path) -> None:
    for heading in (
        "tasks (options: data.task_options):",
        "data formats:",
        "metrics:",
        "model families:",
        "models:",
        "recipes:",
        "config keys (key=value overrides):",
        "teach filters",
        "teach prompts",
    ):
        assert any(line.startswith(heading) for line in r.out.splitlines()), f"`vlmtune ls` printed no '{heading}'"


def _chat_transcript(r: Result, root: Path) -> None:
    image = "runs/quickstart/data/source/images/count-000000.png"
    assert f"[image attached: {image}; it goes with your next message]" in r.out, r.out
    assert "model> " in r.out, r.out


def _split(r: Result, root: Path) -> None:
    rows = [json.loads(l) for l in (root / "data/forensic/train.jsonl").read_text().splitlines() if l.strip()]
    assert any(row["meta"].get("augmented_from") for row in rows), "no augmented copy in train"


CHECKS = {
    "vlmtune ls": _ls_sections,
    "vlmtune chat tiny --adapter runs/quickstart/adapter": _chat_transcript,
    "vlmtune data split data/forensic.jsonl --out data/forensic --fractions train=0.7225,val=0.1275,test=0.15 "
    "--augment-label drug_trade": _split,
}


def test_cache_folders_named_in_the_readme_are_those_of_vlmtune_paths():
    from vlmtune import paths

    made = {
        p.relative_to("C").parts[0]
        for p in (
            paths.models_dir("C"),
            paths.gguf_dir("C"),
            paths.standins_dir("C"),
            paths.smoke_data_dir("C"),
            paths.teacher_cache("m", "C"),
            paths.embeddings_dir("C"),
        )
    }
    text = README.split("`$VLMTUNE_CACHE` (default `~/.cache/vlmtune`) holds", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z-]+)/`", text))
    assert named == made, (named, made)
    public = {n for n in dir(paths) if n.endswith(("_dir", "_cache")) and callable(getattr(paths, n))}
    assert public == {"models_dir", "gguf_dir", "standins_dir", "smoke_data_dir", "teacher_cache", "embeddings_dir"}, (
        f"vlmtune/paths.py has a cache path this test (and the README) does not name: {public}"
    )


def test_readme_names_the_extras_each_seed_recipe_needs():
    from vlmtune.config import load_config
    from vlmtune.pipeline import needed_extras
    from vlmtune.tasks import build_task

    section = README.split("The extras each seed recipe uses", 1)[1].split("\n\n", 1)[0]
    for recipe in sorted((ROOT / "recipes").glob("seed*.yaml")):
        cfg = load_config(recipe, [])
        need = {extra for extra, _ in needed_extras(cfg, build_task(cfg.data.task, cfg.data.task_options))}
        said = section.split(f"`{recipe.stem}`:", 1)[1].split(";", 1)[0].split(". ", 1)[0]
        named = set(re.findall(r"`([a-z]+)`", said))
        assert named == need, f"{recipe.name}: README names {named or 'none'}, the recipe needs {need or 'none'}"
