"""One rank of the 2-process DDP fine-tune in tests/test_ddp.py (launched by torch.distributed.run, CPU/gloo).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py MODEL_DIR DATA_JSONL OUT

Trains LoRA with vlmtune's `train()` and writes, per rank, OUT/rank{R}.json (world size, and the example ids
of every batch this rank trained on, step by step) and OUT/rank{R}_lora.safetensors (this rank's LoRA weights
in memory when training ended, keyed as in the saved adapter).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from vlmtune.config import ModelConfig, TrainConfig
from vlmtune.data.example import load_jsonl
from vlmtune.models.load import ModelRef
from vlmtune.train.collate import EncodeSettings, encode_example
from vlmtune.train.trainer import train


def row_key(input_ids: torch.Tensor, pixel_values: torch.Tensor) -> str:
    """Identify one example from its unpadded tokens [T] and its image [C, H, W] (images are unique per example)."""
    h = hashlib.sha1(input_ids.to(torch.int64).numpy().tobytes())
    h.update(pixel_values.to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class RecordBatches(TrainerCallback):
    """Records the example ids of every training forward pass; dumps the LoRA state when training ends."""

    def __init__(self, id_of: dict[str, str], lora_path: Path):
        self.id_of = id_of
        self.lora_path = lora_path
        self.batches: list[dict] = []
        self.step = 0
        self.epoch = 0.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # model is the unwrapped PeftModel; the DDP wrapper calls it with the collated batch as keyword args.
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step, self.epoch = state.global_step, state.epoch

    def _hook(self, module, args, kwargs):
        if not module.training:
            return
        ids, mask, pix = (
            kwargs["input_ids"],
            kwargs["attention_mask"],
            kwargs["pixel_values"],
        )  # [B, T], [B, T], [B, C, H, W]
        keys = [row_key(ids[b][mask[b] == 1], pix[b]) for b in range(ids.shape[0])]
        self.batches.append({"step": self.step, "epoch": int(self.epoch or 0), "ids": [self.id_of[k] for k in keys]})

    def on_train_end(self, args, state, control, model=None, **kwargs):
        from peft import get_peft_model_state_dict

        lora = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(lora, str(self.lora_path))


def main(model_dir: str, data: str, out: str) -> None:
    from transformers import AutoProcessor

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out_dir = Path(out)
    examples = load_jsonl(data)
    proc = AutoProcessor.from_pretrained(model_dir)
    id_of = {}
    for ex in examples:
        enc = encode_example(proc, ex, EncodeSettings())
        id_of[row_key(enc["input_ids"], enc["pixel_values"][0])] = ex.id
    assert len(id_of) == len(examples), f"examples are not distinguishable: {len(id_of)} keys for {len(examples)}"
    rec = RecordBatches(id_of, out_dir / f"rank{rank}_lora.safetensors")
    cfg = TrainConfig(
        epochs=2, batch_size=4, lr=5e-3, logging_steps=1, save_steps=0, report_to=[], seed=3, lora_dropout=0.1
    )
    res = train(ModelRef.of(ModelConfig(name=str(model_dir))), examples, [], out_dir / "run", cfg, callbacks=[rec])
    (out_dir / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "world_size": world, "steps": res.steps, "batches": rec.batches}, indent=1)
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
