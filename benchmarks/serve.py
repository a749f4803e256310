"""`vlmtune serve` under load: 16 concurrent clients vs the same requests sent one at a time, same server.

    PYTHONPATH=. python benchmarks/serve.py                      # CPU, a random-init tiny LLaVA, ~2 minutes
    PYTHONPATH=. python benchmarks/serve.py --model tiny --adapter runs/quickstart/adapter --max-tokens 8

The script starts `vlmtune serve` as a process on a free loopback port and sends --n chat requests, each an
image (a data URL of a shapes-world PNG) and its question, through the official `openai` client: first one at
a time (the baseline: each request is its own `generate` call), then from --clients threads at once (the server
batches what arrives together). Greedy decoding: the answers must be identical, and the script exits non-zero
if any differ. It prints requests/s of both, their ratio, and p50/p95 latency of a request on each side.

The default model is the tiny LLaVA architecture with random weights re-drawn with std 1/sqrt(fan_in)
(seeded): at its default init an untrained model answers "" at once, which would time a single decoding step.
Such a model answers with --max-tokens tokens every time, as a chatty real model would.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import prepare  # benchmarks/common.py (the script's own folder is on sys.path)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", help="what `vlmtune serve` loads (default: a random-init tiny LLaVA, see above)")
    p.add_argument("--adapter", help="an adapter directory for --model")
    p.add_argument("--n", type=int, default=64, help="requests on each side")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients on the batched side")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the server (default: torch's)")
    return p.parse_args()


def random_model(root: Path) -> Path:
    import torch
    from transformers import AutoModelForImageTextToText

    from vlmtune.models.tiny import TinyBaseConfig, build_processor, save_untrained

    out = save_untrained(TinyBaseConfig(seed=0), root / "model")
    model = AutoModelForImageTextToText.from_pretrained(out)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    model.save_pretrained(out)
    build_processor(TinyBaseConfig(seed=0)).save_pretrained(out)
    return out


def requests(root: Path, n: int) -> list[list[dict]]:
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize

    examples = load_jsonl(synthesize("count", n // 2, root / "count", seed=5))
    examples += load_jsonl(synthesize("classify", n - n // 2, root / "classify", seed=6))
    out = []
    for ex in examples:
        url = "data:image/png;base64," + base64.b64encode(Path(ex.images[0]).read_bytes()).decode()
        question = ex.messages[0]["content"].split("\n", 1)[1]
        out.append(
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}],
                }
            ]
        )
    return out


def start_server(args: argparse.Namespace, model: str, log: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "vlmtune",
        "serve",
        model,
        "--port",
        str(port),
        "--name",
        "bench",
        "--max-batch",
        str(args.clients),
        "--device",
        "cpu",
    ] + (["--adapter", args.adapter] if args.adapter else [])
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    deadline = time.time() + 600
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                sys.exit(f"vlmtune serve did not start:\n{log.read_text()}")
            time.sleep(0.5)


def run_side(client, reqs: list, workers: int, max_tokens: int) -> tuple[list[str], list[float], float]:
    def one(messages):
        t = time.perf_counter()
        r = client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens)
        return r.choices[0].message.content, time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, reqs))
    return [r[0] for r in results], [r[1] for r in results], time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def main() -> int:
    import openai

    args = parse_args()
    load = prepare(None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or str(random_model(root))
        reqs = requests(root, args.n)
        proc, url = start_server(args, model, root / "serve.log")
        try:
            client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
            run_side(client, reqs[:2], 1, args.max_tokens)  # warm-up, untimed
            seq, seq_lat, seq_s = run_side(client, reqs, 1, args.max_tokens)
            conc, conc_lat, conc_s = run_side(client, reqs, args.clients, args.max_tokens)
            batches = [
                int(l.split()[1])
                for l in (root / "serve.log").read_text().splitlines()
                if l.startswith("[serve] ") and "in one batch" in l
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    differ = [i for i, (a, b) in enumerate(zip(seq, conc)) if a != b]
    conc_batches = batches[2 + len(reqs) :]
    print(
        f"vlmtune serve, {args.n} chat requests with an image, max_tokens {args.max_tokens}, "
        f"model {args.model or 'random-init tiny LLaVA'}{' + ' + args.adapter if args.adapter else ''}; "
        f"load average before: {load:.2f}"
    )
    print(
        f"one at a time : {args.n / seq_s:6.2f} req/s ({seq_s:.1f} s), latency p50 {pct(seq_lat, 50):.3f} s, "
        f"p95 {pct(seq_lat, 95):.3f} s"
    )
    print(
        f"{args.clients} clients    : {args.n / conc_s:6.2f} req/s ({conc_s:.1f} s), latency p50 "
        f"{pct(conc_lat, 50):.3f} s, p95 {pct(conc_lat, 95):.3f} s; batches of "
        f"{statistics.mean(conc_batches):.1f} on average (max {max(conc_batches)})"
    )
    print(
        f"throughput ratio: {seq_s / conc_s:.2f}x; answers differing: {len(differ)} of {args.n}"
        f"; answer lengths {min(map(len, seq))}-{max(map(len, seq))} characters"
    )
    for i in differ[:3]:
        print(f"  request {i}: one at a time {seq[i]!r} vs concurrent {conc[i]!r}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
