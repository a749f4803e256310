"""Retrieval and cost metrics of memory methods.

    table = retrieval_metrics(probes, outcomes)          # recall@1/3/5, MRR, evidence injected, token share
    costs = cost_metrics(runner.timings)                 # per-turn write+retrieve latency p50/p95, bytes per turn

Recall@k: the share of probes with evidence whose ranking covers every evidence turn within its first k items;
MRR: the mean of 1 / that position (0 when never covered). Methods without a ranking (truncated and full
context) report only whether the evidence was injected. The injected share is the reminder's tokens over the
whole history's tokens (images counted at their input cost). Every entry has its 95% interval, n, clusters
and method (`vlmtune.stats`): proportions a Wilson interval, MRR and the injected share a bootstrap; probes
of one episode (their `group`) are resampled and counted together. Latencies are percentiles of the measured
turns (no interval: they are timings of one run on a shared machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmtune.data.example import Example
from vlmtune.memory.episodes import Outcome, Timings
from vlmtune.stats import bootstrap_entry, proportion_entry

BUCKETS = ("1-5", "6-20", "21-50", "51-100", "101-200", "201-500")


def retrieval_metrics(
    probes: Sequence[Example], outcomes: Sequence[Outcome], *, n_boot: int = 1000, seed: int = 0, by: str | None = None
) -> dict[str, Any]:
    """Metrics of one method over probes (with evidence, for recall/MRR); `by` splits them by a meta key too."""
    with_ev = [(ex, o) for ex, o in zip(probes, outcomes) if ex.meta.get("evidence")]
    groups = [ex.group for ex, _ in with_ev]
    out: dict[str, Any] = {}
    ranks = [o.record.get("evidence_rank") for _, o in with_ev]
    if with_ev and "evidence_rank" in with_ev[0][1].record:
        for k in (1, 3, 5):
            out[f"recall@{k}"] = proportion_entry(
                [r is not None and r <= k for r in ranks], groups=groups, n_boot=n_boot
            )
        rr = np.array([1.0 / r if r else 0.0 for r in ranks])
        out["mrr"] = bootstrap_entry(rr, groups, n_boot=n_boot, seed=seed)
    if with_ev:
        out["evidence_injected"] = proportion_entry(
            [bool(o.record.get("evidence_injected")) for _, o in with_ev], groups=groups, n_boot=n_boot
        )
    timed = [
        (ex.group, o.reminder.tokens / o.record["history_tokens"])
        for ex, o in zip(probes, outcomes)
        if o.record.get("history_tokens")
    ]
    if timed:
        out["injected_share"] = bootstrap_entry([v for _, v in timed], [g for g, _ in timed], n_boot=n_boot, seed=seed)
    if by:
        keys = sorted({ex.meta.get(by) for ex, _ in with_ev}, key=str)
        out["by_" + by] = {
            str(k): retrieval_metrics(
                [ex for ex, _ in with_ev if ex.meta.get(by) == k],
                [o for ex, o in with_ev if ex.meta.get(by) == k],
                n_boot=n_boot,
                seed=seed,
            )
            for k in keys
        }
    return out


def cost_metrics(t: Timings) -> dict[str, Any]:
    """Per-turn latency (write + one retrieval) percentiles in ms, and bank bytes per turn."""
    out: dict[str, Any] = {}
    if t.write_ms:
        both = np.array(t.write_ms) + np.array(t.retrieve_ms)
        out["turn_ms_p50"], out["turn_ms_p95"] = (float(x) for x in np.percentile(both, [50, 95]))
        out["write_ms_p50"], out["write_ms_p95"] = (float(x) for x in np.percentile(t.write_ms, [50, 95]))
        out["retrieve_ms_p50"], out["retrieve_ms_p95"] = (float(x) for x in np.percentile(t.retrieve_ms, [50, 95]))
        out["turns_timed"] = len(both)
    if t.bank_bytes:
        total, turns = (sum(x) for x in zip(*t.bank_bytes))
        out["bank_bytes_per_turn"] = total / max(turns, 1)
    return out
