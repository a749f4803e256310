"""A real 2-process DDP LoRA fine-tune on CPU (gloo), launched with torch.distributed.run (no config, offline).

Each rank runs tests/ddp_worker.py, which records the example ids of every batch it trained on and its LoRA
weights at the end. Asserts: 2 ranks, disjoint data per step covering the set once per epoch (DistributedSampler
semantics), replicas in sync, and the adapter rank 0 saved equals what it held in memory. ~10-20 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
N_EXAMPLES, BATCH, WORLD, EPOCHS = 32, 4, 2, 2  # must match tests/ddp_worker.py's TrainConfig
STEPS_PER_EPOCH = N_EXAMPLES // (BATCH * WORLD)


def test_two_process_ddp_lora_finetune(micro_model_dir, tmp_path):
    from vlmtune.data.synth import synthesize

    data = synthesize("count", N_EXAMPLES, tmp_path / "data", seed=2)
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        str(ROOT / "tests" / "ddp_worker.py"),
        str(micro_model_dir),
        str(data),
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"torch.distributed.run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == WORLD for r in ranks), ranks
    steps = EPOCHS * STEPS_PER_EPOCH
    assert all(r["steps"] == steps for r in ranks), [r["steps"] for r in ranks]

    # One forward per optimizer step (grad_accum=1), BATCH examples each, on every rank.
    for r in ranks:
        assert [b["step"] for b in r["batches"]] == list(range(steps)), r["batches"]
        assert all(len(b["ids"]) == BATCH for b in r["batches"]), r["batches"]
        assert all(b["epoch"] == b["step"] // STEPS_PER_EPOCH for b in r["batches"]), r["batches"]
    all_ids = {f"count-{i:06d}" for i in range(N_EXAMPLES)}
    for step in range(steps):
        a, b = (set(r["batches"][step]["ids"]) for r in ranks)
        assert not a & b, f"step {step}: both ranks trained on {sorted(a & b)}"
    for epoch in range(EPOCHS):
        seen = [i for r in ranks for bt in r["batches"] if bt["epoch"] == epoch for i in bt["ids"]]
        assert sorted(seen) == sorted(all_ids), f"epoch {epoch}: each example once expected, got {sorted(seen)}"

    # DDP all-reduces gradients, so both replicas end identical; rank 0 alone saved the adapter, and it is
    # exactly what rank 0 held in memory.
    mem0, mem1 = (load_file(str(out / f"rank{r}_lora.safetensors")) for r in range(WORLD))
    saved = load_file(str(out / "run" / "adapter" / "adapter_model.safetensors"))
    assert mem0 and mem0.keys() == mem1.keys() == saved.keys(), (sorted(mem0)[:3], sorted(saved)[:3])
    diff01 = {k: float((mem0[k] - mem1[k]).abs().max()) for k in mem0}
    assert max(diff01.values()) == 0.0, {k: v for k, v in diff01.items() if v}
    assert all(torch.equal(mem0[k], saved[k]) for k in mem0), [k for k in mem0 if not torch.equal(mem0[k], saved[k])]
    assert any(bool(v.abs().sum()) for k, v in saved.items() if "lora_B" in k), "lora_B still zero: no training"
    assert (out / "run" / "train_history.json").exists()


def test_two_process_evaluation_shards_and_matches_one_process(micro_model_dir, tmp_path):
    """`vlmtune eval` under a launcher: each rank answers its share; rank 0 writes the same results as one process."""
    from vlmtune.cli import main
    from vlmtune.data.synth import synthesize

    data = synthesize("classify", 11, tmp_path / "data", seed=4)  # odd: uneven shards
    args = [
        "eval",
        "--model",
        str(micro_model_dir),
        "--data",
        str(data),
        "--mode",
        "both",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "3",
        "-q",
    ]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        "-m",
        "vlmtune",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    # Each rank answered its own share (generation and option scoring both report it).
    assert proc.stderr.count("rank 0 of 2: 6 of 11 examples") == 2, proc.stderr[-3000:]
    assert proc.stderr.count("rank 1 of 2: 5 of 11 examples") == 2, proc.stderr[-3000:]
    one = [json.loads(l) for l in (tmp_path / "one/predictions.jsonl").read_text().splitlines()]
    two = [json.loads(l) for l in (tmp_path / "two/predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in two] == [r["id"] for r in one] and len(two) == 11
    assert [r["prediction"] for r in two] == [r["prediction"] for r in one]
    for a, b in zip(one, two):
        assert max(abs(x - y) for x, y in zip(a["scores"], b["scores"])) < 1e-4


def test_two_process_run_writes_one_complete_run_directory(micro_model_dir, tmp_path):
    """`vlmtune run` under a launcher: rank 0 sets up and reports, both ranks train and evaluate."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        "-m",
        "vlmtune",
        "run",
        str(ROOT / "recipes" / "quickstart.yaml"),
        "name=dd",
        f"output_dir={tmp_path}",
        f"model.name={micro_model_dir}",
        "data.n=64",
        "train.max_steps=4",
        "train.batch_size=4",
        "eval.n_boot=100",
        "eval.max_new_tokens=4",
        "-q",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    run = tmp_path / "dd"
    for f in (
        "config.yaml",
        "data/test.jsonl",
        "zero_shot/predictions.jsonl",
        "adapter/adapter_model.safetensors",
        "finetuned/metrics.json",
        "report.html",
        "train_history.json",
    ):
        assert (run / f).is_file(), f
    assert proc.stdout.count("McNemar") == 1  # one report, by rank 0
    assert proc.stderr.count("rank 1 of 2: 4 of 8 examples") == 2  # rank 1 evaluated its share, twice


def test_two_process_vlmtune_train_prepares_the_data_once(micro_model_dir, tmp_path):
    """`vlmtune train` under a launcher (the docs' command): rank 0 synthesizes and splits the data, rank 1
    waits and reads the same splits; both train, one adapter and one summary line come out."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        "-m",
        "vlmtune",
        "train",
        str(ROOT / "recipes" / "quickstart.yaml"),
        "name=tr",
        f"output_dir={tmp_path}",
        f"model.name={micro_model_dir}",
        "data.n=64",
        "train.max_steps=2",
        "train.batch_size=4",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    run = tmp_path / "tr"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "train_history.json").is_file()
    assert proc.stdout.count("trained 2 steps") == 1, proc.stdout
    assert proc.stderr.count("[data] train: ") == 1, proc.stderr  # the split was made once, by rank 0 (logs: stderr)
    n = sum(len((run / "data" / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test"))
    assert n == 64
