"""shapes-memory: the memory methods side by side on retrieval, cost and (from a recipe run) accuracy.

    PYTHONPATH=. python benchmarks/memory.py --episodes 40                       # retrieval + costs, prints the table
    PYTHONPATH=. python benchmarks/memory.py --episodes 40 --run runs/shapes-memory   # + accuracy of that run

Synthesizes `--episodes` shapes-memory episodes (lengths 50, 100, 200, 500 in turn; 14 probes each), then
replays them through every method with the encoders a recipe uses (MiniLM for text, the tiny VLM's pooled
vision tower for images, the VLM's captions as extra image keys; all cached by content hash, so the first
run pays for captioning and later runs do not). Printed, per method: recall@1/3/5 and MRR of the evidence,
the share of probes whose evidence was injected, the injected tokens as a share of the history's tokens,
and recall@5 per distance bucket and per probe kind, each with its n (95% intervals in the JSON, each
naming its method: Wilson for proportions, a bootstrap over episodes for MRR and the share). Costs of the combined bank: per-turn write + retrieve latency p50/p95 with encoder outputs read
from the cache ("bank only"), the same with MiniLM computing every text live on a subset of episodes (the
baseline the bank's own cost is a ratio of), and bank bytes per turn on disk (journal + text vectors, images
aside). With `--run`, the accuracy per method and distance bucket of that recipe run is printed as well.
Timings come from a shared 2-core machine: they are noisy, and the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import prepare  # noqa: E402

METHODS = ["none", "truncated", "full", "recency", "relevance", "combined", "capped", "oracle"]
KINDS = ("image_recall", "text_to_image", "text_recall", "update", "frequency", "temporal")
BUCKETS = ("1-5", "6-20", "21-50", "51-100", "101-200", "201-500")


def fmt(e, digits: int = 3) -> str:
    return "-" if not isinstance(e, dict) or not e.get("n") else f"{e['value']:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-memory")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--live-episodes", type=int, default=4, help="episodes timed with MiniLM computing live")
    ap.add_argument("--run", help="a finished `vlmtune run recipes/shapes_memory.yaml` directory: its accuracies")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    load = prepare(a.threads or None)

    from vlmtune.build import resolve_model
    from vlmtune.config import MemoryConfig, ModelConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth.memory import PROBE_KINDS, synthesize_memory
    from vlmtune.logs import set_progress
    from vlmtune.memory.episodes import Runner, RunnerSettings, read_episodes
    from vlmtune.memory.experiment import default_window, plot_by_distance
    from vlmtune.memory.measure import cost_metrics, retrieval_metrics
    from vlmtune.memory.reminder import TokenCounter
    from vlmtune.memory.toolkit import Toolkit
    from vlmtune.models.load import dir_hash, load_model

    set_progress(False)
    out = Path(a.out)
    data = synthesize_memory(a.episodes * len(PROBE_KINDS) * 2, out / "data", seed=a.seed)
    probes, episodes = load_jsonl(data), read_episodes(out / "data" / "episodes.jsonl")
    ref = resolve_model(ModelConfig(name=a.model))
    model, processor = load_model(ref)
    kit = Toolkit.build(
        a.text_encoder, "vision_tower", caption=True, model=model, processor=processor, model_hash=dir_hash(ref.path)
    )
    settings = RunnerSettings.from_config(MemoryConfig(), window=default_window(model))
    counter = TokenCounter(processor)
    # Pre-extraction (as `vlmtune memory embed` does): every turn text (each is also a per-turn query when timing)
    # and question, so the timed pass measures the bank, not MiniLM.
    kit.text_vectors(
        sorted({t.text for e in episodes.values() for t in e.turns} | {p.messages[0]["content"] for p in probes})
    )
    kit.flush()
    t0 = time.time()
    runner = Runner(kit, counter, settings)
    res = runner.run(episodes, probes, METHODS, measure=True, store_root=out / "banks")
    seconds = time.time() - t0
    costs = cost_metrics(runner.timings)

    live_ids = sorted({ex.meta["episode"] for ex in probes})
    live_ids = [next(e for e in live_ids if len(episodes[e].turns) == L) for L in (50, 100, 200, 500)][
        : a.live_episodes
    ]
    live_kit = Toolkit.build(
        a.text_encoder, "vision_tower", caption=True, model=model, processor=processor, model_hash=dir_hash(ref.path)
    )
    live_kit.text_cache = None  # MiniLM computes every text (images and captions still come from the cache)
    live = Runner(live_kit, counter, settings)
    live_probes = [ex for ex in probes if ex.meta["episode"] in live_ids]
    live.run({e: episodes[e] for e in live_ids}, live_probes, ["combined"], measure=True)
    live_costs = cost_metrics(live.timings)

    table = {m: retrieval_metrics(probes, res[m], n_boot=1000, by="bucket") for m in METHODS}
    by_kind = {m: retrieval_metrics(probes, res[m], n_boot=200, by="kind")["by_kind"] for m in METHODS}
    turns = sum(len(e.turns) for e in episodes.values())
    print(
        f"shapes-memory: {len(episodes)} episodes, {turns} turns, {len(probes)} probes "
        f"({sum(1 for p in probes if p.meta['evidence'])} with evidence); retrieval of all methods in {seconds:.0f}s "
        f"(load average {load:.1f} at start)"
    )
    print(f"encoders: {json.dumps(kit.identities()['text']['name'])} text, vision_tower images, VLM captions as keys")
    head = ["method", "R@1", "R@3", "R@5", "MRR", "evidence injected", "injected share"] + [f"R@5 {b}" for b in BUCKETS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m in METHODS:
        t = table[m]
        by = t.get("by_bucket", {})
        print(
            "| "
            + " | ".join(
                [
                    m,
                    fmt(t.get("recall@1")),
                    fmt(t.get("recall@3")),
                    fmt(t.get("recall@5")),
                    fmt(t.get("mrr")),
                    fmt(t.get("evidence_injected")),
                    fmt(t.get("injected_share")),
                ]
                + [fmt(by.get(b, {}).get("recall@5")) for b in BUCKETS]
            )
            + " |"
        )
    print(
        "n per bucket (probes with evidence): "
        + ", ".join(
            f"{b}: {table['combined']['by_bucket'].get(b, {}).get('recall@5', {}).get('n', 0)}" for b in BUCKETS
        )
    )
    print("\nrecall@5 by probe kind")
    print("| method | " + " | ".join(KINDS) + " |")
    print("|" + "---|" * (len(KINDS) + 1))
    for m in ("recency", "relevance", "combined", "capped"):
        print(
            f"| {m} | "
            + " | ".join(
                f"{fmt(by_kind[m].get(k, {}).get('recall@5'))} (n={by_kind[m].get(k, {}).get('recall@5', {}).get('n', 0)})"
                for k in KINDS
            )
            + " |"
        )
    print("\ncosts of the combined bank, per turn (write + one retrieval):")
    print(
        f"  bank only (encoder outputs from the cache): p50 {costs['turn_ms_p50']:.2f} ms, p95 {costs['turn_ms_p95']:.2f} ms "
        f"over {costs['turns_timed']} turns"
    )
    print(
        f"  MiniLM live ({len(live_ids)} episodes): p50 {live_costs['turn_ms_p50']:.2f} ms, p95 "
        f"{live_costs['turn_ms_p95']:.2f} ms over {live_costs['turns_timed']} turns; bank-only p95 is "
        f"{costs['turn_ms_p95'] / live_costs['turn_ms_p95']:.2f}x of it"
    )
    print(
        f"  bank on disk: {costs['bank_bytes_per_turn']:.0f} bytes per turn (journal + float16 text vectors; "
        f"image vectors and images aside)"
    )
    results = {
        "retrieval": table,
        "by_kind": by_kind,
        "costs": costs,
        "live_costs": live_costs,
        "seconds": seconds,
        "episodes": len(episodes),
        "probes": len(probes),
        "load": load,
    }
    if a.run:
        summary = json.loads((Path(a.run) / "memory" / "summary.json").read_text())
        print(f"\naccuracy of the fine-tuned tiny VLM ({a.run}), by distance bucket")
        print("| method | accuracy | " + " | ".join(BUCKETS) + " | abstention P / R | false abstentions |")
        print("|" + "---|" * (len(BUCKETS) + 4))
        for m, d in summary["methods"].items():
            mt = d["metrics"]
            print(
                f"| {m} | {fmt(mt.get('accuracy'))} (n={mt['accuracy']['n']}) | "
                + " | ".join(
                    f"{fmt(mt.get(f'accuracy_distance_{b}'), 2)} (n={mt.get(f'accuracy_distance_{b}', {}).get('n', 0)})"
                    for b in BUCKETS
                )
                + f" | {fmt(mt.get('abstention_precision'), 2)} / {fmt(mt.get('abstention_recall'), 2)} | "
                f"{fmt(mt.get('false_abstention_rate'), 2)} |"
            )
        results["run"] = summary
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "recall_by_distance.png").write_bytes(
        plot_by_distance(
            {
                m: table[m]["by_bucket"]
                and {f"r_{b}": table[m]["by_bucket"].get(b, {}).get("recall@5") for b in BUCKETS}
                for m in ("recency", "relevance", "combined", "capped")
            },
            key="r_{b}",
            title="recall@5 against distance",
        )
    )
    print(f"\nwrote {out / 'results.json'} and {out / 'recall_by_distance.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
