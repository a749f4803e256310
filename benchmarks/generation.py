"""Batched greedy generation (left padding, batch_size=32) vs one example at a time: same outputs, how much faster.

    cd /work/main && PYTHONPATH=. python benchmarks/generation.py --threads 1          # CPU, ~1 minute
    PYTHONPATH=. python benchmarks/generation.py --n 64 --batch-size 32 --max-new-tokens 16 --repeats 3

Both sides call `vlmtune.infer.generate.generate` on the same random-init tiny LLaVA
(`save_untrained(TinyBaseConfig())`, CPU, fp32, no download) and the same synthetic examples (a mix of `count`
and `classify` questions, so prompts differ in length and the batch really is left-padded). Greedy decoding is
deterministic, so the batched answers must equal the one-at-a-time answers; the script prints how many differ
(and the first few) and exits non-zero if any do. Times are the median of --repeats after an untimed warm-up.

Why the weights are re-drawn (--init scaled, the default): at its initialisation (std 0.02) the untrained model's
logits are nearly flat and it answers "" (end-of-turn first) for every input, which would make the equality
check vacuous and the timing a single decoding step. Matrices re-drawn with std 1/sqrt(fan_in) (seeded) give
input-dependent answers that run the full max_new_tokens. --init default keeps the saved weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import prepare, tiny_model  # benchmarks/common.py (the script's own folder is on sys.path)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--n", type=int, default=64, help="examples (half count, half classify)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the batched side")
    p.add_argument("--max-new-tokens", type=int, default=16, help="greedy tokens per answer (both)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each, interleaved; the median is reported")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine",
    )
    p.add_argument(
        "--init",
        choices=("scaled", "default"),
        default="scaled",
        help="scaled: re-draw weight matrices with std 1/sqrt(fan_in) so answers depend on the input",
    )
    p.add_argument("--seed", type=int, default=0, help="data and model seed")
    return p.parse_args()


def rescale_(model, seed: int) -> None:
    """Re-draw every weight matrix from N(0, 1/fan_in), seeded: O(1) activations, sharp logits."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() >= 2:
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(w.shape[-1]))


def main() -> None:
    a = parse_args()
    import torch
    import transformers

    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize
    from vlmtune.infer.generate import generate
    from vlmtune.processing import prompt_text

    load_before = prepare(a.threads)
    with tempfile.TemporaryDirectory(prefix="vlmtune-bench-") as tmp:
        # --- set up: one model, one example list, shared by both ------------------------------------------------
        root = Path(tmp)
        model, processor, tiny = tiny_model(root, a.seed)
        if a.init == "scaled":
            rescale_(model, a.seed)
        half = a.n // 2
        examples = [
            ex
            for task, k in (("count", a.n - half), ("classify", half))
            if k
            for ex in load_jsonl(synthesize(task, k, root / task, seed=a.seed, image_size=tiny.image_size))
        ]
        lens = [
            len(processor.tokenizer(prompt_text(processor, ex), add_special_tokens=False)["input_ids"])
            for ex in examples
        ]
        print(
            f"[bench] {len(examples)} examples, prompt {min(lens)}-{max(lens)} text tokens (+ image tokens); "
            f"tiny LLaVA ({a.init} init), CPU fp32, greedy, max_new_tokens={a.max_new_tokens}"
        )

        # --- run: untimed warm-up, then interleaved timed repeats -----------------------------------------------
        kw = dict(max_new_tokens=a.max_new_tokens)
        generate(model, processor, examples[:2], batch_size=2, **kw)
        t_batched, t_single = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            batched = generate(model, processor, examples, batch_size=a.batch_size, **kw)
            t_batched.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            single = generate(model, processor, examples, batch_size=1, **kw)
            t_single.append(time.perf_counter() - t0)

    # --- report ---------------------------------------------------------------------------------------------------
    differ = [(ex.id, s, b) for ex, s, b in zip(examples, single, batched) if s != b]
    tb, t1 = statistics.median(t_batched), statistics.median(t_single)
    print(
        f"\ntorch {torch.__version__}  transformers {transformers.__version__}  threads {torch.get_num_threads()} "
        f"(cpu_count {os.cpu_count()})  load avg before/after {load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(f"batched (batch_size={a.batch_size}): {tb:7.2f} s  ({len(examples) / tb:6.1f} examples/s)")
    print(f"one at a time (batch_size=1): {t1:7.2f} s  ({len(examples) / t1:6.1f} examples/s)")
    print(
        f"speed-up: {t1 / tb:.1f}x   outputs that differ: {len(differ)}/{len(examples)}   "
        f"distinct answers: {len(set(single))}, mean {statistics.mean(map(len, single)):.1f} characters"
    )
    if a.repeats > 1:
        print(
            "seconds per repeat: batched "
            + ", ".join(f"{t:.2f}" for t in t_batched)
            + "; one at a time "
            + ", ".join(f"{t:.2f}" for t in t_single)
        )
    for ex_id, s, b in differ[:5]:
        print(f"  {ex_id}: one-at-a-time {s!r} vs batched {b!r}")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
