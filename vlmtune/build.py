"""Turn a model name into weights `from_pretrained` can load, building local bases on first use.

    ref = resolve_model(cfg.model)       # once per command; every later step gets the ModelRef
    model, processor = load_model(ref)

- 'tiny': the built-in tiny base VLM, built here by a two-stage training job (below) and cached under
  `$VLMTUNE_CACHE/models/`, keyed by a hash of its build settings; later runs load the cache.
- 'gemma3-270m' or a .gguf file: dequantized once (`vlmtune.models.gguf`).
- a directory or a hub id: passed through unchanged.

The tiny base is built the way real VLMs are (`vlmtune.models.tiny` holds its specification):
1. the vision tower is pretrained on its own: each patch token predicts the colour and kind of the shape in
   its cell of the shapes world's grid (the analogue of starting from a pretrained CLIP);
2. with the vision tower frozen, the projector and language model are pretrained on shapes-world captions
   with vlmtune's own trainer (`train.method=full`).
The build is deterministic (seeded) and written atomically: a half-built base is never picked up.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vlmtune.config import ModelConfig
from vlmtune.models.load import ModelRef
from vlmtune.models.tiny import TinyBaseConfig, build_model, build_processor
from vlmtune.paths import models_dir

log = logging.getLogger(__name__)


def resolve_model(cfg: ModelConfig) -> ModelRef:
    """The loadable path of `cfg.name` ('tiny' and GGUF names are built or converted on first use)."""
    if cfg.name == "tiny":
        tcfg = TinyBaseConfig(pretrain_examples=cfg.tiny_pretrain_examples, pretrain_epochs=cfg.tiny_pretrain_epochs)
        return ModelRef(cfg.name, str(build_base(tcfg)), cfg)
    from vlmtune.models.gguf import is_gguf_name, resolve_gguf

    if is_gguf_name(cfg.name):
        return ModelRef(cfg.name, str(resolve_gguf(cfg.name)), cfg)
    return ModelRef(cfg.name, cfg.name, cfg)


SHIPPED = Path(__file__).resolve().parent / "assets" / "tiny-base"


def shipped_key() -> str | None:
    """The build key of the tiny base shipped with vlmtune (None when the package carries none)."""
    meta = SHIPPED / "vlmtune_build.json"
    return json.loads(meta.read_text())["key"] if meta.is_file() else None


def _install_shipped(final: Path) -> Path:
    """Copy the shipped base into the cache (atomically: a half-copied base is never picked up)."""
    log.info(f"[tiny] using the tiny base shipped with vlmtune (built by scripts/build_tiny_base.py) -> {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tiny-copy-", dir=final.parent))
    try:
        shutil.copytree(SHIPPED, tmp / "model")
        if not final.exists():
            os.replace(tmp / "model", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def pretrain_vision(model: Any, processor: Any, examples: list, cfg: TinyBaseConfig) -> float:
    """Stage 1: train the vision tower so each patch token tells which shape (if any) is in its cell.

    Uses the scene ground truth in shapes-world examples' meta. Returns the final loss.
    """
    import torch

    from vlmtune.data.synth.shapes import COLORS, GRID, KINDS
    from vlmtune.logs import progress_bar
    from vlmtune.processing import load_image

    if cfg.patch_size * GRID != cfg.image_size:
        raise ValueError(
            "the vision pretraining objective needs one patch per grid cell "
            f"(patch_size * {GRID} == image_size), got {cfg.patch_size} and {cfg.image_size}"
        )
    classes = {(c, k): 1 + i * len(KINDS) + j for i, c in enumerate(COLORS) for j, k in enumerate(KINDS)}
    pixels = processor.image_processor([load_image(e.images[0]) for e in examples], return_tensors="pt")["pixel_values"]
    labels = torch.zeros(len(examples), GRID * GRID, dtype=torch.long)  # [N, cells]; 0 = empty cell
    for i, e in enumerate(examples):
        for s in e.meta["scene"]["shapes"]:
            labels[i, s["cell"]] = classes[(s["color"], s["kind"])]
    tower = model.model.vision_tower
    head = torch.nn.Linear(tower.config.hidden_size, 1 + len(classes))
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    tower.train()
    loss = torch.tensor(float("nan"))
    for _ in progress_bar(range(cfg.vision_steps), desc="pretrain vision"):
        idx = torch.randint(0, len(examples), (64,), generator=gen)
        hidden = tower(pixels[idx], output_hidden_states=True).hidden_states[-1][:, 1:]  # [B, cells, D], CLS dropped
        loss = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), labels[idx].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return float(loss.detach())


def build_base(cfg: TinyBaseConfig | None = None, *, cache: str | Path | None = None, fresh: bool = False) -> Path:
    """Return the directory of the pretrained tiny base: from the cache, else the copy shipped with vlmtune (for the
    default settings), else built and cached. `fresh=True` always builds (into the cache's usual place)."""
    from vlmtune.config import TrainConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.data.synth import synthesize
    from vlmtune.train.trainer import train

    cfg = cfg or TinyBaseConfig()
    final = models_dir(cache) / f"tiny-llava-{cfg.key()}"
    if (final / "vlmtune_build.json").exists() and not fresh:
        return final
    if shipped_key() == cfg.key() and not fresh:
        return _install_shipped(final)
    log.info(f"[tiny] building the tiny base VLM (first use; cached at {final})")
    t0 = time.time()
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tiny-build-", dir=final.parent))
    try:
        data = synthesize(
            "caption", cfg.pretrain_examples, work / "captions", seed=10_000 + cfg.seed, image_size=cfg.image_size
        )
        examples = load_jsonl(data)
        processor = build_processor(cfg)
        model = build_model(cfg, processor.tokenizer)
        vision_loss = pretrain_vision(model, processor, examples, cfg)
        log.info(f"[tiny] stage 1: vision tower pretrained ({cfg.vision_steps} steps, cell loss {vision_loss:.4f})")
        init_dir = work / "init"
        model.save_pretrained(init_dir)
        processor.save_pretrained(init_dir)
        del model
        settings = TrainConfig(
            method="full",
            freeze_vision=True,
            epochs=cfg.pretrain_epochs,
            lr=cfg.pretrain_lr,
            batch_size=cfg.pretrain_batch_size,
            warmup_ratio=0.05,
            weight_decay=0.01,
            seed=cfg.seed,
            logging_steps=25,
            max_length=192,
            lr_scheduler="cosine",
            report_to=[],
            group_by_length=False,
        )
        # Caption length follows the number of shapes, so length-grouped batches would each hold one kind of
        # scene: the base came out far worse that way (final caption loss 0.51 instead of 0.09, 0/60 captions
        # exact instead of 18/60). The base is built from shuffled batches, as it was before grouping existed.
        log.info("[tiny] stage 2: caption pretraining of the projector and language model (vision tower frozen)")
        result = train(
            ModelRef.of(ModelConfig(name=str(init_dir))), examples, [], work / "pretrain", settings, stage="tiny"
        )
        out = work / "model"
        shutil.copytree(result.output_dir, out)
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle of the Trainer's arguments: not shipped
        meta = {
            "config": asdict(cfg),
            "key": cfg.key(),
            "seconds": round(time.time() - t0, 1),
            "vision_cell_loss": vision_loss,
            "final_caption_loss": result.final_loss,
            "steps": result.steps,
        }
        (out / "vlmtune_build.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)  # atomic: a half-built base is never picked up from the cache
        log.info(f"[tiny] stage 2 done: {result.steps} steps, final caption loss {result.final_loss:.3f}")
        log.info(f"[tiny] built in {meta['seconds']:.0f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
