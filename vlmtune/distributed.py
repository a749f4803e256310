"""Running under a launcher (torchrun / `accelerate launch`): which process is the main one, waiting for
the others, and splitting evaluation work across them. In a single process every helper is a no-op.

    if is_main_process(): write_results()
    texts = sharded(lambda idx: answer([examples[i] for i in idx]), len(examples))
"""

from __future__ import annotations

import os
import sys


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _process_group():
    """torch.distributed, initialised from a launcher's environment on first use (gloo on CPU, nccl on GPU)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        import atexit

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(dist.destroy_process_group)  # an undestroyed group aborts the process at exit
    return dist


def barrier() -> None:
    """Wait for every process of a launcher (no-op in a single process)."""
    if world_size() > 1:
        _process_group().barrier()


def sharded(fn, n: int) -> list:
    """fn(indices) -> one result per index, run across the processes of a launcher (torchrun / accelerate
    launch): each rank answers a contiguous share of range(n) and every rank gets all n results back, in
    order. A single process just calls fn(range(n))."""
    world = world_size()
    if world <= 1:
        return list(fn(list(range(n))))
    dist = _process_group()
    rank = dist.get_rank()
    per = -(-n // world)  # ceil: ranks 0..world-1 take contiguous blocks; the last may be short or empty
    idx = list(range(rank * per, min(n, (rank + 1) * per)))
    print(f"[eval] rank {rank} of {world}: {len(idx)} of {n} examples", file=sys.stderr, flush=True)
    local = list(zip(idx, fn(idx) if idx else []))
    gathered: list = [None] * world
    dist.all_gather_object(gathered, local)
    merged = dict(pair for part in gathered for pair in part)
    if sorted(merged) != list(range(n)):
        raise RuntimeError(f"sharded evaluation lost examples: got {len(merged)} of {n}")
    return [merged[i] for i in range(n)]
