"""`vlmtune teach` against a fake OpenAI-compatible server with 200 ms latency per request: concurrency 16 vs one
request at a time (the seed's generator), then a rerun that the cache answers.

    PYTHONPATH=. python benchmarks/teach.py              # CPU, about 40 s
    PYTHONPATH=. python benchmarks/teach.py --n 64 --latency 0.2 --concurrency 16

Each side runs the whole `teach()` (render and check the prompts, ask, filter, export, report) on the same
shapes-world dialogue examples with a fresh cache; the server (tests/fake_openai.py, a real HTTP server on a
loopback port, in its own process as a real server would be) sleeps `latency` seconds per request and answers
like a teacher that recalls the history. Prints wall time, requests sent (counted by the client) and throughput
for each, their ratio, and the requests the cached rerun sent. Fails if the exports differ.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="examples (one request each)")
    ap.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    import subprocess

    from vlmtune import logs
    from vlmtune.config import TeachConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize
    from vlmtune.tasks import build_task
    from vlmtune.teacher.run import teach

    logs.set_progress(False)
    logging.getLogger("vlmtune").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    examples = load_jsonl(synthesize("dialog", args.n, tmp / "data", seed=7))
    task = build_task("dialog")
    rows = []
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_openai.py"), str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        url = server.stdout.readline().strip()
        for label, conc in [("one at a time", 1), (f"concurrency {args.concurrency}", args.concurrency)]:
            cfg = TeachConfig(
                target="reminder+gold",
                backend="openai",
                model="teacher",
                base_url=url,
                concurrency=conc,
                cache=str(tmp / f"cache-{conc}.jsonl"),
                filters={"skip": ["agreement"]},
            )
            t0 = time.perf_counter()
            res = teach(examples, task, cfg, tmp / f"out-{conc}")
            rows.append((label, time.perf_counter() - t0, res.summary.sent, conc))
        t0 = time.perf_counter()
        res = teach(examples, task, cfg, tmp / "out-rerun")
        rerun = (time.perf_counter() - t0, res.summary.sent, res.summary.cached)
    finally:
        server.kill()
    same = (tmp / "out-1" / "data.jsonl").read_bytes() == (tmp / f"out-{args.concurrency}" / "data.jsonl").read_bytes()
    same_rerun = (tmp / "out-rerun" / "data.jsonl").read_bytes() == (tmp / "out-1" / "data.jsonl").read_bytes()
    print(
        f"teach() on {args.n} shapes-world dialogues, fake server latency {args.latency * 1000:.0f} ms, "
        f"load average before: {__import__('os').getloadavg()[0]:.1f}"
    )
    print(f"{'side':<18} {'seconds':>8} {'requests':>9} {'req/s':>7}")
    for label, secs, sent, _ in rows:
        print(f"{label:<18} {secs:>8.2f} {sent:>9d} {sent / secs:>7.2f}")
    ratio = rows[0][1] / rows[1][1]
    print(f"throughput ratio (concurrency {args.concurrency} / one at a time): {ratio:.1f}x")
    print(f"cached rerun: {rerun[1]} requests sent, {rerun[2]} answered from the cache, {rerun[0]:.2f} s")
    print(f"exports identical: {same and same_rerun}")
    return 0 if same and same_rerun and rerun[1] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
