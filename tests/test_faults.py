"""Fault injection: `vlmtune run` killed with SIGKILL (kill -9) at chosen or random points, then `--resume`, must
end with the same files, byte for byte, as a run that was never interrupted (timings aside).

Each trial runs the real CLI in a subprocess (tests/fault_driver.py) on the micro model, in the same folder
as the uninterrupted reference run (reports record absolute paths), kills it at one write (a file opened for
writing, a rename, a torch.save or safetensors save: checkpoint saves included) or after a random delay,
resumes it with `vlmtune run ... --resume` in a fresh subprocess, and compares every result file.

The CI part kills at one point of each stage (data, zero-shot evaluation, inside a checkpoint save, the
adapter save, the report). The soak (SOAK_KILLS random kills, about as many minutes) runs only when asked
for: `python -m pytest -m slow tests/test_faults.py`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "fault_driver.py"
SOAK_KILLS = 20
# Small enough for CI; save_steps=1 gives a checkpoint save at every step to be killed in.
ARGS = [
    "run",
    str(ROOT / "recipes" / "quickstart.yaml"),
    "name=f",
    "data.n=32",
    "train.max_steps=4",
    "train.batch_size=4",
    "train.save_steps=1",
    "train.logging_steps=1",
    "train.eval_steps=2",
    "train.val_max_examples=4",
    "eval.n_boot=100",
    "eval.max_new_tokens=4",
    "-q",
]
# Not results: the log, TensorBoard event files (wall times), intermediate checkpoints.
SKIP = {"run.log", "logs", "checkpoints"}
TIMING_KEYS = ("seconds", "_runtime", "_per_second")


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }


def _drive(
    work: Path,
    model: Path,
    kill_at: int,
    trace: Path | None = None,
    *,
    delay: float | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """One run in `work` killed at write `kill_at` (0: never), or by the test `delay` seconds after it starts."""
    cmd = [
        sys.executable,
        str(DRIVER),
        str(trace or work / "count"),
        str(kill_at),
        "--",
        *ARGS,
        f"model.name={model}",
        *extra,
    ]
    env = {**_env(), **({"FAULT_TRACE": "1"} if trace else {})}
    if delay is None:
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _resume(work: Path, model: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vlmtune", *ARGS, f"model.name={model}", "--resume"]
    return subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=900)


def _normalized(path: Path) -> bytes:
    if path.suffix != ".json":
        return path.read_bytes()

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not (k == "seconds" or k.endswith(TIMING_KEYS[1:]))}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return json.dumps(strip(json.loads(path.read_text(encoding="utf-8"))), sort_keys=True).encode()


def result_files(run: Path) -> dict[str, bytes]:
    """Every result file of a run directory (relative path -> content with timings removed)."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run)
        if p.is_file() and rel.parts[0] not in SKIP:
            out[str(rel)] = _normalized(p)
    return out


def differences(ref: dict[str, bytes], got: dict[str, bytes]) -> list[str]:
    diffs = [f"missing {k}" for k in sorted(set(ref) - set(got))] + [f"extra {k}" for k in sorted(set(got) - set(ref))]
    return diffs + [f"differs {k}" for k in sorted(set(ref) & set(got)) if ref[k] != got[k]]


class Bench:
    """The uninterrupted reference run, its list of writes, and trials run in the same folder."""

    def __init__(self, root: Path, model: Path):
        self.work, self.model = root / "work", model
        self.work.mkdir()
        trace = root / "writes.txt"
        t0 = time.time()
        proc = _drive(self.work, model, 0, trace)
        assert proc.returncode == 0, proc.stderr[-3000:]
        self.seconds = time.time() - t0
        self.writes = [line.split(": ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("[fault] write ")]
        assert len(self.writes) == int(trace.read_text()), "the trace and the count disagree"
        self.ref = result_files(self.work / "runs" / "f")
        assert "adapter/adapter_model.safetensors" in self.ref and "report.html" in self.ref
        shutil.rmtree(self.work / "runs")

    def index_of(self, needle: str) -> int:
        """1-based number of the first write whose description contains `needle`."""
        return next(i + 1 for i, w in enumerate(self.writes) if needle in w)

    def trial(self, *, kill_at: int = 0, delay: float | None = None) -> tuple[bool, str]:
        """Kill, resume, compare. Returns (identical, what happened)."""
        shutil.rmtree(self.work / "runs", ignore_errors=True)
        killed = _drive(self.work, self.model, kill_at, delay=delay)
        where = f"write {kill_at} ({self.writes[kill_at - 1][:90]})" if kill_at else f"{delay:.1f}s"
        if killed.returncode not in (-signal.SIGKILL, 0):
            return False, f"kill at {where}: exit {killed.returncode}: {killed.stderr[-1500:]}"
        resumed = _resume(self.work, self.model)
        if resumed.returncode != 0:
            return False, f"kill at {where}: --resume failed ({resumed.returncode}): {resumed.stderr[-2500:]}"
        diffs = differences(self.ref, result_files(self.work / "runs" / "f"))
        state = "killed" if killed.returncode else "finished before the kill"
        return not diffs, f"kill at {where}, {state}: " + ("identical" if not diffs else "; ".join(diffs[:8]))


@pytest.fixture(scope="module")
def bench(micro_model_dir, tmp_path_factory):
    return Bench(tmp_path_factory.mktemp("faults"), micro_model_dir)


# One kill inside each stage; the checkpoint kill lands between the optimizer and the trainer state of
# checkpoint-3, so checkpoint-3 is a folder with most of its files and no sentinel.
POINTS = {
    "data": "data/.test.jsonl",
    "zero-shot": "zero_shot/.fingerprint.json",
    "checkpoint save": "checkpoint-3/scheduler.pt",
    "adapter save": ".adapter.partial/adapter_model",
    "report": "report.md",
}


@pytest.mark.parametrize("stage", list(POINTS))
def test_kill_then_resume_is_byte_identical(bench, stage):
    ok, what = bench.trial(kill_at=bench.index_of(POINTS[stage]))
    assert ok, what


@pytest.mark.slow
def test_soak_random_kills(bench, capsys, request):
    """SOAK_KILLS kills at random writes or random times; prints the tally (the README's figure)."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the soak runs when asked for: python -m pytest -m slow tests/test_faults.py")
    rng = random.Random(int(os.environ.get("FAULT_SEED", "16")))
    results = []
    for i in range(SOAK_KILLS):
        if i % 2 == 0:
            ok, what = bench.trial(kill_at=rng.randint(1, len(bench.writes)))
        else:
            ok, what = bench.trial(delay=rng.uniform(2.0, bench.seconds))
        results.append((ok, what))
        with capsys.disabled():
            print(f"[soak] {i + 1}/{SOAK_KILLS} {'ok ' if ok else 'BAD'} {what[:300]}", flush=True)
    good = sum(ok for ok, _ in results)
    with capsys.disabled():
        print(
            f"[soak] {good} of {SOAK_KILLS} kill -9 + --resume trials byte-identical to the uninterrupted run "
            f"(reference run {bench.seconds:.0f}s, {len(bench.writes)} writes)"
        )
    assert good == SOAK_KILLS, [w for ok, w in results if not ok]
