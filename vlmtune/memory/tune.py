"""Tune the combined score's weights and decay on a dev split: a small grid, ranked by the evidence's MRR.

    best = tune(episodes, dev_probes, kit, counter, RunnerSettings())[0]     # (settings, {"mrr": ..., ...})

Only retrieval is measured (no model answers), so a grid of a few dozen settings runs in minutes with cached
embeddings. Ties in MRR go to the higher recall@5, then to the earlier grid point (the grid is ordered from
the defaults outward), so the result is deterministic. Use a dev split, never the test probes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from vlmtune.data.example import Example
from vlmtune.memory.episodes import Episode, Runner, RunnerSettings
from vlmtune.memory.measure import retrieval_metrics
from vlmtune.memory.reminder import TokenCounter
from vlmtune.memory.toolkit import Toolkit

GRID = {
    "recency": (0.25, 0.1, 0.5),
    "hybrid": (0.5, 0.3, 0.7),
    "superseded_penalty": (0.5, 1.0),
    "decay": (50.0, 200.0),
}


def grid_settings(base: RunnerSettings, grid: Mapping[str, Sequence[float]] = GRID) -> list[RunnerSettings]:
    out = []
    for rec, hyb, pen, dec in itertools.product(
        *(grid[k] for k in ("recency", "hybrid", "superseded_penalty", "decay"))
    ):
        score = replace(
            base.bank.score,
            weights={**base.bank.score.weights, "recency": rec},
            hybrid=hyb,
            superseded_penalty=pen,
            decay=dec,
        )
        out.append(replace(base, bank=replace(base.bank, score=score)))
    return out


def tune(
    episodes: dict[str, Episode],
    probes: Sequence[Example],
    kit: Toolkit,
    counter: TokenCounter,
    base: RunnerSettings,
    grid: Mapping[str, Sequence[float]] = GRID,
) -> list[tuple[RunnerSettings, dict[str, Any]]]:
    """Every grid point with its retrieval metrics, best first."""
    from vlmtune.logs import progress_bar, progress_enabled, set_progress

    results = []
    points = grid_settings(base, grid)
    was = progress_enabled()
    try:
        for i, s in enumerate(progress_bar(points, desc="memory tune")):
            set_progress(False)  # one bar for the grid, not one per episode pass
            outs = Runner(kit, counter, s).run(episodes, probes, ["combined"])["combined"]
            set_progress(was)
            m = retrieval_metrics(probes, outs, n_boot=200)
            results.append((i, s, {"mrr": m["mrr"]["value"], "recall@5": m["recall@5"]["value"]}))
    finally:
        set_progress(was)
    results.sort(key=lambda r: (-round(r[2]["mrr"], 9), -round(r[2]["recall@5"], 9), r[0]))
    return [(s, m) for _, s, m in results]


def as_recipe(s: RunnerSettings) -> dict[str, Any]:
    """The memory: keys a tuned setting changes, for a recipe."""
    sc = s.bank.score
    return {
        "weights": dict(sc.weights),
        "hybrid": sc.hybrid,
        "decay": sc.decay,
        "superseded_penalty": sc.superseded_penalty,
    }
