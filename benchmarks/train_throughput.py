"""Training-loop throughput: vlmtune's `train()` vs TRL's `SFTTrainer`, same tiny model, data and LoRA.

    cd /work/main && PYTHONPATH=. python benchmarks/train_throughput.py                  # CPU, 1-2 min when idle
    PYTHONPATH=. python benchmarks/train_throughput.py --steps 40 --batch-size 16 --repeats 3

Both sides train a fresh random-init tiny LLaVA (`save_untrained(TinyBaseConfig())`, no cache, no download) on
the same synthetic `count` examples with the same LoRA (r, alpha, dropout, target module names), batch size,
steps, learning rate, schedule, seed and device (CPU, fp32). TRL uses its default VLM path: a dataset with
"messages" + "images" columns, so `DataCollatorForVisionLanguageModeling` tokenizes and processes images per batch.

What is timed is the training loop only: one `TrainerCallback` measures on_train_begin -> on_train_end for both
(model loading, LoRA attach, vlmtune's up-front encoding and TRL's trainer construction are outside it; the
"total s" column includes them). samples/s = steps * batch / loop seconds. Runs are interleaved
(vlmtune, TRL, vlmtune, TRL, ...) after one short warm-up run of each, and the median is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

# The tiny model's chat template (vlmtune.models.tiny.CHAT_TEMPLATE) with `{% generation %}` markers around each
# assistant turn's content and its "<|end|>\n". Why: TRL's `assistant_only_loss` needs a template with these
# markers; for templates without them it swaps in a known training template, and it knows none for our custom one
# (`get_training_chat_template` returns nothing usable). The rendering is identical (asserted in `trl_processor`),
# and the marked span equals what vlmtune trains on: the answer and its end-of-turn token, not the role header.
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
NEVER = 10**9  # a save interval that is never reached: no checkpoint is written inside the timed loop


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    p.add_argument("--batch-size", type=int, default=8, help="per-device batch size (both)")
    p.add_argument("--n", type=int, default=256, help="synthetic count examples to train on")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each, interleaved; the median is reported")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run of each (0: none)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (both)")
    p.add_argument("--seed", type=int, default=0, help="data, model init, LoRA init and training seed")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    p.add_argument("--image-size", type=int, default=None,
                   help="TinyBaseConfig.image_size and synth image side (default: TinyBaseConfig's)")
    p.add_argument("--patch-size", type=int, default=None, help="TinyBaseConfig.patch_size (default: TinyBaseConfig's)")
    return p.parse_args()


def make_timer():
    """A TrainerCallback timing on_train_begin -> on_train_end; the same class is used for both trainers."""
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        seconds: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self._t0

    return LoopTimer()


def final_loss(history: list[dict]) -> float | None:
    losses = [h["loss"] for h in history if "loss" in h]
    return losses[-1] if losses else None


# --- vlmtune -------------------------------------------------------------------------------------------------------

def run_vlmtune(model_dir: Path, examples, out: Path, steps: int, a: argparse.Namespace) -> dict:
    from vlmtune.config import ModelConfig, TrainConfig
    from vlmtune.train.trainer import train

    tcfg = TrainConfig(method="lora", max_steps=steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, report_to=[],
                       lora_r=16, lora_alpha=32, lora_dropout=0.05, lora_target="language",
                       lora_modules="attention+mlp", loss_on="assistant", save_steps=NEVER, logging_steps=10)
    timer = make_timer()
    t0 = time.perf_counter()
    from vlmtune.models.load import ModelRef

    ref = ModelRef.of(ModelConfig(name=str(model_dir), device="cpu", dtype="float32"))
    res = train(ref, examples, [], out, tcfg, callbacks=[timer])
    return {"seconds": timer.seconds, "total": time.perf_counter() - t0, "steps": res.steps,
            "loss": final_loss(res.history), "loss_tokens_per_example": res.train_loss_tokens / len(examples)}


# --- TRL -----------------------------------------------------------------------------------------------------------

def trl_processor(model_dir: Path, sample_messages: list[dict]):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    before = processor.apply_chat_template(sample_messages, tokenize=False)
    processor.chat_template = TRL_TRAIN_TEMPLATE
    after = processor.apply_chat_template(sample_messages, tokenize=False)
    assert before == after, f"the marked template renders differently:\n{before!r}\nvs\n{after!r}"
    return processor


def trl_rows(examples) -> list[dict]:
    """Our Examples in TRL's conversational VLM format: typed content parts + PIL images."""
    from vlmtune.processing import load_image, to_chat

    return [{"messages": to_chat(ex.messages), "images": [load_image(p) for p in ex.images]} for ex in examples]


def run_trl(model_dir: Path, rows: list[dict], targets: list[str], out: Path, steps: int,
            a: argparse.Namespace, check_examples=None) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    timer = make_timer()
    t0 = time.perf_counter()
    processor = trl_processor(model_dir, rows[0]["messages"])
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    cfg = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=a.batch_size, max_steps=steps, learning_rate=a.lr,
        seed=a.seed, data_seed=a.seed, report_to=[], save_strategy="no", use_cpu=True,
        # Match vlmtune's TrainingArguments where SFTConfig's defaults differ (it defaults to gradient
        # checkpointing on and bf16 on, which would make this a different workload).
        gradient_checkpointing=False, bf16=False, fp16=False,
        warmup_steps=0.05, lr_scheduler_type="linear", weight_decay=0.0, logging_steps=10, logging_first_step=True,
        max_length=256, dataloader_num_workers=0, disable_tqdm=False,
        # vlmtune trains on the assistant answer (+ its end-of-turn token) only; this is TRL's equivalent for
        # conversational VLM data (completion_only_loss applies to prompt/completion datasets only).
        assistant_only_loss=True,
    )
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets, bias="none",
                          task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=processor,
                         peft_config=peft_cfg, callbacks=[timer])
    mask = check_mask(trainer, rows, check_examples, model_dir) if check_examples else None
    trainer.train()
    return {"seconds": timer.seconds, "total": time.perf_counter() - t0, "steps": trainer.state.global_step,
            "loss": final_loss(trainer.state.log_history), "collator": type(trainer.data_collator).__name__,
            "mask": mask}


def check_mask(trainer, rows: list[dict], examples, model_dir: Path) -> str:
    """Do TRL's loss tokens equal vlmtune's on the first batch? (outside the timed loop)"""
    from transformers import AutoProcessor

    from vlmtune.train.collate import IGNORE, EncodeSettings, encode_example

    k = min(4, len(rows))
    batch = trainer.data_collator([dict(r) for r in rows[:k]])
    ours = AutoProcessor.from_pretrained(model_dir)  # the unmodified processor vlmtune itself loads
    same, n_tokens = True, 0
    for i, ex in enumerate(examples[:k]):
        theirs = batch["input_ids"][i][batch["labels"][i] != IGNORE].tolist()
        enc = encode_example(ours, ex, EncodeSettings(loss_on="assistant", max_length=256))
        mine = enc["input_ids"][enc["labels"] != IGNORE].tolist()
        same &= theirs == mine
        n_tokens += len(mine)
    return f"{'identical' if same else 'DIFFERENT'} on {k} examples ({n_tokens / k:.1f} loss tokens each)"


# --- main ----------------------------------------------------------------------------------------------------------

def main() -> None:
    a = parse_args()
    import peft
    import torch
    import transformers
    import trl
    from transformers.utils import logging as hf_logging

    from vlmtune.config import ModelConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize
    from vlmtune.models.load import load_model, lora_target_modules
    from vlmtune.models.tiny import TinyBaseConfig, save_untrained

    hf_logging.set_verbosity_error()
    load_before = os.getloadavg()[0]  # 1-minute load average: other jobs on the machine skew CPU timings
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="vlmtune-bench-") as tmp:
        # --- set up: one model dir, one data set, one list of LoRA targets, shared by both -----------------------
        root = Path(tmp)
        sizes = {k: v for k, v in (("image_size", a.image_size), ("patch_size", a.patch_size)) if v is not None}
        tiny = TinyBaseConfig(**sizes, seed=a.seed)
        model_dir = save_untrained(tiny, root / "model")
        examples = load_jsonl(synthesize("count", a.n, root / "data", seed=a.seed, image_size=tiny.image_size))
        model, _ = load_model(ModelConfig(name=str(model_dir), device="cpu", dtype="float32"))
        targets = lora_target_modules(model, "language", "attention+mlp")
        del model
        rows = trl_rows(examples)
        print(f"[bench] {len(examples)} count examples, {len(targets)} LoRA target modules, "
              f"steps={a.steps} batch={a.batch_size} lr={a.lr} seed={a.seed}, CPU fp32, "
              f"image {tiny.image_size}px / patch {tiny.patch_size}px = "
              f"{(tiny.image_size // tiny.patch_size) ** 2} image tokens")

        # --- run: warm-up, then interleaved timed repeats ------------------------------------------------------
        mask = None
        if a.warmup_steps > 0:
            print(f"[bench] warm-up ({a.warmup_steps} steps each, not timed)")
            run_vlmtune(model_dir, examples, root / "warm-vlmtune", a.warmup_steps, a)
            mask = run_trl(model_dir, rows, targets, root / "trl", a.warmup_steps, a, check_examples=examples)["mask"]
        results: dict[str, list[dict]] = {"vlmtune": [], "trl": []}
        for r in range(a.repeats):
            print(f"[bench] repeat {r + 1}/{a.repeats}")
            results["vlmtune"].append(run_vlmtune(model_dir, examples, root / f"vlmtune-{r}", a.steps, a))
            results["trl"].append(run_trl(model_dir, rows, targets, root / "trl", a.steps, a,
                                          check_examples=None if mask else examples))
            mask = mask or results["trl"][-1]["mask"]

    # --- report ---------------------------------------------------------------------------------------------------
    loss_mode = {"vlmtune": "assistant (train.loss_on)", "trl": "assistant_only_loss"}
    label = {"vlmtune": "vlmtune train()", "trl": "trl SFTTrainer"}
    rate = {}
    print(f"\ntorch {torch.__version__}  transformers {transformers.__version__}  trl {trl.__version__}  "
          f"peft {peft.__version__}  threads {torch.get_num_threads()} (cpu_count {os.cpu_count()})  "
          f"load avg before/after {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    if load_before > 0.5 and torch.get_num_threads() > 1:
        # Measured here: with another process on one of 2 cores, 2 torch threads made each loop 10-50x slower
        # (threads spin waiting for each other); 1 thread was steady.
        print("note: other processes were using the CPU; multi-threaded timings can be far off. Try --threads 1.")
    print(f"TRL collator: {results['trl'][0]['collator']}; loss tokens vs vlmtune's mask: {mask}")
    head = f"{'method':<16} {'loss mode':<26} {'steps':>5} {'batch':>5} {'loop s':>8} {'samples/s':>10} " \
           f"{'total s':>8} {'final loss':>10}"
    print(head + "\n" + "-" * len(head))
    for key in ("vlmtune", "trl"):
        runs = results[key]
        sec = statistics.median(x["seconds"] for x in runs)
        steps = runs[0]["steps"]
        rate[key] = steps * a.batch_size / sec
        total = statistics.median(x["total"] for x in runs)
        loss = runs[-1]["loss"]
        print(f"{label[key]:<16} {loss_mode[key]:<26} {steps:>5} {a.batch_size:>5} {sec:>8.2f} {rate[key]:>10.1f} "
              f"{total:>8.2f} {loss if loss is None else round(loss, 4)!s:>10}")
    for key in ("vlmtune", "trl"):
        per_run = ", ".join(f"{x['seconds']:.2f}" for x in results[key])
        print(f"{label[key]} loop seconds per repeat: {per_run}")
    print(f"\nvlmtune / TRL samples/s: {rate['vlmtune'] / rate['trl']:.2f}x  (median of {a.repeats} run(s); "
          "> 1 means vlmtune's loop is faster)")
    print("loop s = on_train_begin -> on_train_end; total s also counts model load, LoRA attach, vlmtune's "
          "up-front encoding and TRL's trainer construction. TRL tokenizes and processes images per batch inside "
          "the loop; vlmtune encodes once before it.")


if __name__ == "__main__":
    main()
