"""The memory connector's comparison table: each system's BLEU-4, ROUGE-L, R@1 and MRR on the same test rounds (95%
intervals as metrics.json names them), and paired tests against a reference system: exact McNemar on the
100-option ranking's rank-1 hits and on exact match, paired bootstrap on ROUGE-L and reciprocal rank.

    python scripts/connector_table.py "no connector=runs/shapes-dialog-connector/zero_shot" \\
        "connector, no position=runs/shapes-dialog-connector-nopos/finetuned" \\
        "connector + position=runs/shapes-dialog-connector/finetuned" --reference 2

Every system must have answered the same example ids with option scores (eval.mode=both or loglik).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vlmtune.metrics.ranking import rank_of_gt
from vlmtune.stats import mcnemar_exact, paired_bootstrap
from vlmtune.tasks import build_task


def load(folder: Path) -> tuple[dict, dict]:
    rows = {json.loads(line)["id"]: json.loads(line) for line in (folder / "predictions.jsonl").open(encoding="utf-8")}
    return rows, json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["metrics"]


def per_example(rows: list[dict]) -> dict[str, np.ndarray]:
    task = build_task("dialog", {})
    parts = task.per_example(rows)
    ranks = rank_of_gt(np.array([r["scores"] for r in rows]), np.array([r["target"]["gt_index"] for r in rows]))
    return {
        "rougeL": np.array(parts["rougeL"]),
        "rr": 1.0 / ranks,
        "hit1": ranks == 1,
        "em": np.array([bool(r["correct"]) for r in rows]),
    }


def cell(m: dict, key: str) -> str:
    e = m[key]
    return f"{e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("systems", nargs="+", help="LABEL=EVALUATION_DIR")
    ap.add_argument("--reference", type=int, default=-1, help="index of the system the others are tested against")
    a = ap.parse_args()
    systems = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in a.systems]
    loaded = [load(p) for _, p in systems]
    ids = sorted(loaded[0][0])
    for (label, p), (rows, _) in zip(systems, loaded):
        if sorted(rows) != ids:
            raise SystemExit(f"{label} ({p}) answered other examples than {systems[0][0]}")
    values = [per_example([rows[i] for i in ids]) for rows, _ in loaded]
    groups = [loaded[0][0][i]["group"] for i in ids]
    ref_label, ref = systems[a.reference][0], values[a.reference]
    methods = "; ".join(
        f"{k}: {loaded[0][1][k].get('method')}" for k in ("bleu", "rougeL", "r@1", "mrr", "exact_match")
    )
    print(
        f"n = {len(ids)} test rounds. 95% intervals ({methods}). Paired tests against '{ref_label}': exact McNemar "
        "(rank-1 hits of the 100-option ranking; exact match), paired bootstrap (ROUGE-L, reciprocal rank; 2,000 "
        "resamples, 95% CI).\n"
    )
    print(
        "| system | BLEU-4 | ROUGE-L | R@1 | MRR | exact match | R@1 McNemar (b/c, p) | exact match McNemar | "
        "ROUGE-L: reference − row [95% CI], p | reciprocal rank: reference − row [95% CI], p |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, ((label, _), (_, m), v) in enumerate(zip(systems, loaded, values)):
        tests = ["-"] * 4
        if k != (a.reference % len(systems)):
            h = mcnemar_exact(v["hit1"], ref["hit1"])
            e = mcnemar_exact(v["em"], ref["em"])
            r = paired_bootstrap(v["rougeL"], ref["rougeL"], groups=groups)
            q = paired_bootstrap(v["rr"], ref["rr"], groups=groups)
            tests = [
                f"{h['b']}/{h['c']}, p = {h['p_value']:.2g}",
                f"{e['b']}/{e['c']}, p = {e['p_value']:.2g}",
                f"{r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}], p = {r['p_value']:.2g}",
                f"{q['diff']:+.3f} [{q['ci'][0]:+.3f}, {q['ci'][1]:+.3f}], p = {q['p_value']:.2g}",
            ]
        print(
            f"| {label} | {cell(m, 'bleu')} | {cell(m, 'rougeL')} | {cell(m, 'r@1')} | {cell(m, 'mrr')} | "
            f"{cell(m, 'exact_match')} | " + " | ".join(tests) + " |"
        )
    print(f"\nb/c: rounds only the row's system / only '{ref_label}' got right.")


if __name__ == "__main__":
    main()
