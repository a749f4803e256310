"""Training throughput end to end: vlmtune's `train()` vs TRL's `SFTTrainer`, same model, data, LoRA, batch, steps.

    cd /work/main && PYTHONPATH=. python benchmarks/train_throughput.py --workload tiny     # tiny VLM, counting
    PYTHONPATH=. python benchmarks/train_throughput.py --workload gemma                    # Gemma-3 270M, coref MCQ
    PYTHONPATH=. python benchmarks/train_throughput.py --workload gemma --answer-tokens 1,8,64 --repeats 1

Workloads (CPU, fp32, no download):
- tiny: a fresh random-init tiny LLaVA (`save_untrained(TinyBaseConfig())`) on synthetic `count` questions with
  images. TRL takes its default VLM path: "messages" + "images" rows, processed per batch by its collator, with a
  copy of the chat template carrying `{% generation %}` markers so `assistant_only_loss` can find the answers.
- gemma: the real Gemma-3 270M of the `gemma` extra (`model.name=gemma3-270m`, dequantized and cached on first
  use) on the shapes world's English coreference questions whose photos are captions (seed 002's setting, text
  only). TRL gets conversational prompt/completion rows, so it trains on the completion only.
- `--answer-tokens 1,8,64` (with either workload's prompts) replaces every answer by one of exactly N tokens, to
  show how the ratio depends on the answer's share of the sequence.
Both sides use the same LoRA (r=16, alpha=32, dropout 0.05, the language model's attention + MLP projections),
batch size, steps, learning rate, schedule, seed and example order (vlmtune's `train.group_by_length` is off here so
the batches are the same); the benchmark checks on the first batch that both put the loss on the same tokens.

Every run is its own process, so peak memory (the process's VmHWM: Python, libraries, model, data and training)
is per side. Reported per side: setup s (model load, LoRA, data encoding / trainer construction), loop s
(on_train_begin -> on_train_end), total s (the two: what a user waits for, imports aside), samples/s over the
loop and end to end, peak MB, the loss of the first step (equal on both sides when the math and the first batch
are the same) and of the last. Ratios are vlmtune / TRL (> 1: vlmtune faster; memory < 1: vlmtune smaller), the
median over --repeats interleaved runs. A machine with other work running skews timings: the load average is
printed, and --threads 1 is steadier there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEVER = 10**9  # a save interval that is never reached: no checkpoint is written inside the timed loop
DEFAULTS = {
    "tiny": {"steps": 20, "batch_size": 8, "n": 256, "max_length": 256},
    "gemma": {"steps": 6, "batch_size": 2, "n": 24, "max_length": 768},
}
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05)
# The tiny model's chat template with `{% generation %}` markers around each assistant turn's content and its
# "<|end|>\n" (TRL's assistant_only_loss needs them; it knows no training template for this custom one). The
# rendering is identical (asserted), and the marked span equals what vlmtune trains on.
TRL_TRAIN_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|end|>\n"
    "{% endgeneration %}{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--workload", choices=("tiny", "gemma"), default="tiny")
    p.add_argument("--steps", type=int, help="optimizer steps per run (default: tiny 20, gemma 6)")
    p.add_argument("--batch-size", type=int, help="per-device batch size (default: tiny 8, gemma 2)")
    p.add_argument("--n", type=int, help="training examples (default: tiny 256, gemma 24)")
    p.add_argument(
        "--answer-tokens",
        default="",
        help="comma-separated answer lengths in tokens, e.g. 1,8,64 (default: the workload's own answers)",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each side, interleaved; medians reported")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in each run")
    p.add_argument(
        "--full-logits",
        action="store_true",
        help="also run vlmtune with train.answer_only_logits=false (the effect of answer-only logits alone)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one side from a spec file
    return p.parse_args()


# --- data and model ------------------------------------------------------------------------------------------------


def prepare(a: argparse.Namespace, root: Path) -> dict:
    """The model directory and the examples both sides train on (a JSONL file), for one workload."""
    from vlmtune.data.example import load_jsonl, write_jsonl
    from vlmtune.data.synth import synthesize

    if a.workload == "tiny":
        from vlmtune.models.tiny import TinyBaseConfig, save_untrained

        model_dir = save_untrained(TinyBaseConfig(seed=a.seed), root / "model")
        examples = load_jsonl(synthesize("count", a.n, root / "data", seed=a.seed))
    else:
        from vlmtune.build import resolve_model
        from vlmtune.config import ModelConfig

        model_dir = Path(resolve_model(ModelConfig(name="gemma3-270m")).path)
        pool = load_jsonl(synthesize("mcq", 12 * a.n, root / "data", seed=a.seed))
        examples = [e for e in pool if not e.images and e.meta.get("lang") == "en"][: a.n]
        if len(examples) < a.n:
            raise SystemExit(f"only {len(examples)} English caption-only questions; lower --n")
    return {"model_dir": str(model_dir), "examples": examples}


def with_answer_length(examples: list, model_dir: str, n_tokens: int) -> list:
    """The examples with answers of exactly `n_tokens` tokens (words of the shapes world, cut to length)."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    words = "the red circle is next to a small blue square and two green triangles near the yellow one ".split()
    out = []
    for i, ex in enumerate(examples):
        text, k = "", i
        while len(tok(text, add_special_tokens=False)["input_ids"]) < n_tokens:
            text = (text + " " + words[k % len(words)]).strip()
            k += 1
        ids = tok(text, add_special_tokens=False)["input_ids"][:n_tokens]
        answer = tok.decode(ids)
        assert len(tok(answer, add_special_tokens=False)["input_ids"]) == n_tokens, answer
        msgs = [dict(m) for m in ex.messages]
        msgs[-1]["content"] = answer
        out.append(replace(ex, messages=msgs, target=answer))
    return out


# --- one side, in its own process ----------------------------------------------------------------------------------


def timer_callback():
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        begin = end = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    return LoopTimer()


def losses(history: list[dict]) -> tuple[float | None, float | None]:
    vals = [h["loss"] for h in history if "loss" in h]
    return (vals[0], vals[-1]) if vals else (None, None)


def child_vlmtune(spec: dict) -> dict:
    from vlmtune.config import ModelConfig, TrainConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.models.load import ModelRef
    from vlmtune.train.trainer import train

    examples = load_jsonl(spec["data"])
    tcfg = TrainConfig(
        method="lora",
        max_steps=spec["steps"],
        batch_size=spec["batch_size"],
        lr=spec["lr"],
        seed=spec["seed"],
        report_to=[],
        lora_r=LORA["r"],
        lora_alpha=LORA["lora_alpha"],
        lora_dropout=LORA["lora_dropout"],
        lora_target="language",
        lora_modules="attention+mlp",
        loss_on="assistant",
        save_steps=NEVER,
        logging_steps=1,
        max_length=spec["max_length"],
        group_by_length=False,
        warmup_ratio=0.05,
        answer_only_logits=spec.get("answer_only", True),
    )
    timer = timer_callback()
    t0 = time.perf_counter()
    res = train(
        ModelRef.of(ModelConfig(name=spec["model_dir"], device="cpu", dtype="float32")),
        examples,
        [],
        Path(spec["out"]),
        tcfg,
        callbacks=[timer],
    )
    t1 = time.perf_counter()
    first, last = losses(res.history)
    return {
        "setup": timer.begin - t0,
        "loop": timer.end - timer.begin,
        "total": t1 - t0,
        "steps": res.steps,
        "first_loss": first,
        "final_loss": last,
        "loss_tokens": res.train_loss_tokens / len(examples),
    }


def _trl_processor(spec: dict, first_messages: list):
    from transformers import AutoProcessor, AutoTokenizer

    if not spec["vision"]:
        return AutoTokenizer.from_pretrained(spec["model_dir"])
    processor = AutoProcessor.from_pretrained(spec["model_dir"])
    before = processor.apply_chat_template(first_messages, tokenize=False)
    processor.chat_template = TRL_TRAIN_TEMPLATE
    assert processor.apply_chat_template(first_messages, tokenize=False) == before, "marked template differs"
    return processor


def child_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    from vlmtune.data.example import load_jsonl
    from vlmtune.processing import load_image, to_chat

    examples = load_jsonl(spec["data"])
    timer = timer_callback()
    t0 = time.perf_counter()
    if spec["vision"]:
        rows = [{"messages": to_chat(ex.messages), "images": [load_image(p) for p in ex.images]} for ex in examples]
        processor = _trl_processor(spec, rows[0]["messages"])
        model = AutoModelForImageTextToText.from_pretrained(spec["model_dir"], dtype=torch.float32)
        loss_kw = {"assistant_only_loss": True}
    else:
        rows = [{"prompt": ex.prompt_messages(), "completion": [ex.messages[-1]]} for ex in examples]
        processor = _trl_processor(spec, None)
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
        loss_kw = {"completion_only_loss": True}
    cfg = SFTConfig(
        output_dir=spec["out"],
        per_device_train_batch_size=spec["batch_size"],
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        seed=spec["seed"],
        data_seed=spec["seed"],
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        warmup_steps=0.05,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        logging_steps=1,
        logging_first_step=True,
        max_length=spec["max_length"],
        dataloader_num_workers=0,
        disable_tqdm=True,
        **loss_kw,
    )
    peft_cfg = LoraConfig(**LORA, target_modules=spec["targets"], bias="none", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        peft_config=peft_cfg,
        callbacks=[timer],
    )
    mask = _same_loss_tokens(trainer, examples, spec)
    trainer.train()
    t1 = time.perf_counter()
    first, last = losses(trainer.state.log_history)
    return {
        "setup": timer.begin - t0,
        "loop": timer.end - timer.begin,
        "total": t1 - t0,
        "steps": trainer.state.global_step,
        "first_loss": first,
        "final_loss": last,
        "mask": mask,
        "collator": type(trainer.data_collator).__name__,
    }


def _same_loss_tokens(trainer, examples: list, spec: dict) -> str:
    """Do TRL's loss tokens equal vlmtune's on the first 4 examples? (checked before the loop starts)"""
    from transformers import AutoProcessor, AutoTokenizer

    from vlmtune.train.collate import IGNORE, EncodeSettings, encode_example

    k = min(4, len(examples))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(k)])
    ours = (AutoProcessor if spec["vision"] else AutoTokenizer).from_pretrained(spec["model_dir"])
    same, n = True, 0
    for i, ex in enumerate(examples[:k]):
        labels = batch.get("labels", batch["input_ids"])[i]
        keep = labels != IGNORE
        if "completion_mask" in batch:
            keep &= batch["completion_mask"][i].bool()
        if "attention_mask" in batch:
            keep &= batch["attention_mask"][i].bool()
        theirs = batch["input_ids"][i][keep].tolist()
        enc = encode_example(ours, ex, EncodeSettings(loss_on="assistant", max_length=spec["max_length"]))
        mine = enc["input_ids"][enc["labels"] != IGNORE].tolist()
        same &= theirs == mine
        n += len(mine)
    return f"{'identical' if same else 'DIFFERENT'} on {k} examples ({n / k:.1f} loss tokens each)"


def run_child(spec: dict, side: str, threads: int | None) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
        "TOKENIZERS_PARALLELISM": "false",
    }
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    spec_file = Path(spec["out"]) / "spec.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", f"{side}:{spec_file}"], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"the {side} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(arg: str) -> None:
    side, spec_file = arg.split(":", 1)
    spec = json.loads(Path(spec_file).read_text())
    from transformers.utils import logging as hf_logging

    from vlmtune.logs import set_progress

    hf_logging.set_verbosity_error()
    set_progress(False)
    out = (child_vlmtune if side == "vlmtune" else child_trl)(spec)
    out["peak_mb"] = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024
    print(json.dumps(out))


# --- main ----------------------------------------------------------------------------------------------------------


def measure(a: argparse.Namespace, root: Path, model_dir: str, examples: list, label: str) -> dict:
    from vlmtune.config import ModelConfig
    from vlmtune.data.example import write_jsonl
    from vlmtune.models.load import load_model, lora_target_modules

    data = write_jsonl(root / f"{label}.jsonl", examples)
    model, _ = load_model(ModelConfig(name=model_dir, device="cpu", dtype="float32"))
    targets = lora_target_modules(model, "language", "attention+mlp")
    vision = hasattr(model.config, "vision_config")
    del model
    sides = ["vlmtune", "trl"] + (["vlmtune-full"] if a.full_logits else [])
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(a.repeats):
        for side in sides:
            spec = {
                "model_dir": model_dir,
                "data": str(data),
                "steps": a.steps,
                "batch_size": a.batch_size,
                "lr": a.lr,
                "seed": a.seed,
                "max_length": a.max_length,
                "targets": targets,
                "vision": vision,
                "out": str(root / f"{label}-{side}-{r}"),
                "answer_only": side != "vlmtune-full",
            }
            results[side].append(run_child(spec, "trl" if side == "trl" else "vlmtune", a.threads))
            print(
                f"[bench] {label} {side} run {r + 1}/{a.repeats}: loop {results[side][-1]['loop']:.1f} s, "
                f"total {results[side][-1]['total']:.1f} s",
                file=sys.stderr,
            )
    med = {
        side: {k: statistics.median(x[k] for x in runs) for k in ("setup", "loop", "total", "peak_mb")}
        | {k: runs[0][k] for k in ("steps", "first_loss", "final_loss")}
        for side, runs in results.items()
    }
    med["mask"] = results["trl"][0]["mask"]
    med["loss_tokens"] = results["vlmtune"][0]["loss_tokens"]
    return med


def print_table(a: argparse.Namespace, label: str, m: dict) -> None:
    samples = a.steps * a.batch_size
    print(
        f"\n{label}: {a.steps} steps x batch {a.batch_size}, {m['loss_tokens']:.1f} loss tokens per example; "
        f"TRL's loss tokens vs vlmtune's: {m['mask']}"
    )
    head = (
        f"{'side':<13} {'setup s':>8} {'loop s':>8} {'total s':>8} {'loop samples/s':>15} {'e2e samples/s':>14} "
        f"{'peak MB':>8} {'first loss':>10} {'final loss':>10}"
    )
    print(head + "\n" + "-" * len(head))
    for side in [k for k in ("vlmtune", "trl", "vlmtune-full") if k in m]:
        r = m[side]
        print(
            f"{side:<13} {r['setup']:>8.2f} {r['loop']:>8.2f} {r['total']:>8.2f} {samples / r['loop']:>15.2f} "
            f"{samples / r['total']:>14.2f} {r['peak_mb']:>8.0f} {r['first_loss']:>10.4f} {r['final_loss']:>10.4f}"
        )
    v, t = m["vlmtune"], m["trl"]
    print(
        f"vlmtune / TRL: loop samples/s {t['loop'] / v['loop']:.2f}x, end-to-end samples/s "
        f"{t['total'] / v['total']:.2f}x, peak memory {v['peak_mb'] / t['peak_mb']:.2f}x"
    )
    if "vlmtune-full" in m:
        f = m["vlmtune-full"]
        print(
            f"answer-only vs full logits (both vlmtune): loop {f['loop'] / v['loop']:.2f}x faster, peak memory "
            f"{v['peak_mb'] / f['peak_mb']:.2f}x"
        )


def main() -> None:
    a = parse_args()
    if a.child:
        return child_main(a.child)
    for key, value in DEFAULTS[a.workload].items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)
    import torch
    import transformers
    import trl

    from vlmtune.logs import set_progress

    set_progress(False)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vlmtune-bench-") as tmp:
        root = Path(tmp)
        prep = prepare(a, root)
        lengths = [int(x) for x in a.answer_tokens.split(",") if x.strip()]
        tables = []
        for n in lengths or [None]:
            exs = prep["examples"] if n is None else with_answer_length(prep["examples"], prep["model_dir"], n)
            label = f"{a.workload}" + ("" if n is None else f", answers of {n} tokens")
            tables.append((label, measure(a, root, prep["model_dir"], exs, label.replace(", ", "-").replace(" ", "_"))))
    print(
        f"\ntorch {torch.__version__}  transformers {transformers.__version__}  trl {trl.__version__}  "
        f"threads/run {a.threads or 'default'} (cpu_count {os.cpu_count()})  load avg before/after "
        f"{load_before:.2f}/{os.getloadavg()[0]:.2f}  repeats {a.repeats} (medians)"
    )
    for label, m in tables:
        print_table(a, label, m)
    if len(tables) > 1:
        print("\nanswer tokens | loop ratio | end-to-end ratio | peak memory ratio (vlmtune / TRL)")
        for (label, m), n in zip(tables, lengths):
            v, t = m["vlmtune"], m["trl"]
            print(
                f"{n:>13} | {t['loop'] / v['loop']:>10.2f} | {t['total'] / v['total']:>16.2f} | "
                f"{v['peak_mb'] / t['peak_mb']:>17.2f}"
            )


if __name__ == "__main__":
    main()
