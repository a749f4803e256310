"""Ranking 100 VisDial-style candidate answers: shared-prefix scoring vs one full forward per option.

    cd /work/main && PYTHONPATH=. python benchmarks/option_scoring.py --threads 1          # CPU, ~1 minute
    PYTHONPATH=. python benchmarks/option_scoring.py --rounds 4 --options 50 --repeats 3

Both scorers rank the same candidates for the same dialogue rounds on the same random-init tiny LLaVA
(`save_untrained(TinyBaseConfig())`, CPU, fp32, no download). Each round is a synthetic `count` example whose
question follows a few earlier question/answer turns (a VisDial-like history), so the prompt is long compared
with the answers. `score_options` runs the prompt and image once per round and scores the candidates in batches
against its repeated KV cache; `score_options_full` runs prompt + image + candidate once per candidate.
Prints both times (median of --repeats, after an untimed warm-up), the speed-up, the max |score difference|
and whether the rankings agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import prepare, tiny_model  # benchmarks/common.py (the script's own folder is on sys.path)

HISTORY = [
    ("Is this a photo or a drawing?", "a drawing"),
    ("What is in the picture?", "a few coloured shapes"),
    ("Are any of them touching?", "no, they are apart"),
    ("Is the background plain?", "yes, it is grey"),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=8, help="dialogue rounds (examples) to rank candidates for")
    p.add_argument("--options", type=int, default=100, help="candidate answers per round (VisDial has 100)")
    p.add_argument("--batch-size", type=int, default=16, help="score_options: candidates per forward pass")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each, interleaved; the median is reported")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine",
    )
    p.add_argument("--seed", type=int, default=0, help="data and model seed")
    return p.parse_args()


def candidates(n: int) -> list[str]:
    """n distinct short answers of the kinds VisDial's candidate lists hold (yes/no, numbers, colours, phrases)."""
    from vlmtune.data.synth.shapes import COLORS, KINDS, NUMBER_WORDS

    out = [
        "yes",
        "no",
        "I can't tell",
        "maybe",
        "not sure",
        "yes, it is",
        "no, it isn't",
        "I think so",
        "there are none",
        "only one",
        "yes, there are two",
        "no, there are two",
        "all of them",
        "두 개",
    ]
    out += [str(i) for i in range(13)] + list(NUMBER_WORDS)
    out += list(COLORS) + [f"{k}s" for k in KINDS]
    out += [f"{n} {c} {k}s" for n in NUMBER_WORDS[2:5] for c in COLORS for k in KINDS]
    out += [f"it is {c}" for c in COLORS] + [f"a {s} {k}" for s in ("small", "big") for k in KINDS]
    out = list(dict.fromkeys(out))
    if len(out) < n:  # more than the built-in set: numbered variants keep them distinct
        out += [f"{i} shapes" for i in range(13, 13 + n - len(out))]
    return out[:n]


def dialogue_rounds(examples) -> list:
    """Count examples with a history of earlier turns before the question (the image stays in the first turn)."""
    from vlmtune.data.example import IMAGE_TOKEN

    rounds = []
    for ex in examples:
        question = ex.messages[0]["content"].replace(IMAGE_TOKEN, "").strip()
        msgs = []
        for i, (q, a) in enumerate(HISTORY):
            msgs += [
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{q}" if i == 0 else q},
                {"role": "assistant", "content": a},
            ]
        msgs += [{"role": "user", "content": question}, ex.messages[-1]]
        rounds.append(replace(ex, messages=msgs))
    return rounds


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    a = parse_args()
    import torch
    import transformers

    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize
    from vlmtune.infer.score import score_options, score_options_full
    from vlmtune.processing import load_image, prompt_text

    load_before = prepare(a.threads)
    with tempfile.TemporaryDirectory(prefix="vlmtune-bench-") as tmp:
        # --- set up: one model, one set of rounds, one candidate list, shared by both ----------------------------
        root = Path(tmp)
        model, processor, tiny = tiny_model(root, a.seed)
        rounds = dialogue_rounds(
            load_jsonl(synthesize("count", a.rounds, root / "data", seed=a.seed, image_size=tiny.image_size))
        )
        opts = candidates(a.options)
        options = [opts] * len(rounds)
        tok = processor.tokenizer
        prompt_len = statistics.mean(
            len(
                processor(text=[prompt_text(processor, r)], images=[load_image(r.images[0])], return_tensors="pt")[
                    "input_ids"
                ][0]
            )
            for r in rounds
        )
        opt_len = statistics.mean(len(tok(o, add_special_tokens=False)["input_ids"]) + 1 for o in opts)
        print(
            f"[bench] {len(rounds)} rounds x {len(opts)} candidates; prompt {prompt_len:.0f} tokens "
            f"(incl. {(tiny.image_size // tiny.patch_size) ** 2} image tokens), candidate {opt_len:.1f} tokens "
            f"(incl. end-of-turn) on average; tiny LLaVA, CPU fp32, batch_size={a.batch_size}"
        )

        # --- run: untimed warm-up on one round, then interleaved timed repeats -----------------------------------
        score_options(model, processor, rounds[:1], options[:1], batch_size=a.batch_size)
        score_options_full(model, processor, rounds[:1], options[:1])
        score_options(model, processor, rounds[:1], options[:1], batch_size=a.batch_size, packing="off")
        t_shared, t_batched, t_full, stats, bstats = [], [], [], {}, {}
        for _ in range(a.repeats):
            t, shared = timed(
                lambda: score_options(model, processor, rounds, options, batch_size=a.batch_size, stats=stats)
            )
            t_shared.append(t)
            t, batched = timed(
                lambda: score_options(
                    model, processor, rounds, options, batch_size=a.batch_size, stats=bstats, packing="off"
                )
            )
            t_batched.append(t)
            t, full = timed(lambda: score_options_full(model, processor, rounds, options))
            t_full.append(t)

    # --- report ---------------------------------------------------------------------------------------------------
    diff = max(abs(x - y) for rs, rf in zip(shared, full) for x, y in zip(rs, rf))
    rank = lambda rows: [sorted(range(len(r)), key=lambda i: -r[i]) for r in rows]  # noqa: E731
    same_rank = sum(a_ == b_ for a_, b_ in zip(rank(shared), rank(full)))
    ts, tb, tf = statistics.median(t_shared), statistics.median(t_batched), statistics.median(t_full)
    diff_b = max(abs(x - y) for rs, rf in zip(batched, full) for x, y in zip(rs, rf))
    n = len(rounds) * len(opts)
    print(
        f"\ntorch {torch.__version__}  transformers {transformers.__version__}  threads {torch.get_num_threads()} "
        f"(cpu_count {os.cpu_count()})  load avg before/after {load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(
        f"shared prefix, packed options (score_options):        {ts:7.2f} s  ({n / ts:7.1f} options/s; "
        f"{stats['prefix_forwards']} prefix + {stats['option_forwards']} option forwards, "
        f"{stats['fallback_options']} fallbacks)"
    )
    print(
        f"shared prefix, batched cache copies (packing='off'):  {tb:7.2f} s  ({n / tb:7.1f} options/s; "
        f"{bstats['option_forwards']} option forwards)"
    )
    print(f"full forward per option (score_options_full):        {tf:7.2f} s  ({n / tf:7.1f} options/s; {n} forwards)")
    if a.repeats > 1:
        print(
            "seconds per repeat: packed "
            + ", ".join(f"{t:.2f}" for t in t_shared)
            + "; batched "
            + ", ".join(f"{t:.2f}" for t in t_batched)
            + "; full "
            + ", ".join(f"{t:.2f}" for t in t_full)
        )
    print(
        f"speed-up over one forward per option: packed {tf / ts:.1f}x, batched {tf / tb:.1f}x   "
        f"max |score diff| {diff:.2e} (batched {diff_b:.2e})   identical full rankings: "
        f"{same_rank}/{len(rounds)} rounds"
    )


if __name__ == "__main__":
    main()
