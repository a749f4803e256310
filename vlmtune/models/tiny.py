"""The tiny local base VLM: a real `LlavaForConditionalGeneration` built from a shrunk config.

It has a small CLIP vision tower (64 px, 16 px patches -> 16 image tokens, one per cell of the shapes
world's 4x4 grid), a small Llama text model, a byte-level BPE tokenizer trained locally on
shapes-world text, and a real chat template. It is built the way real VLMs are, in two stages:
1. the vision tower is pretrained on its own (each patch token predicts the colour and kind of the
   shape in its cell: the analogue of starting from a pretrained CLIP);
2. with the vision tower frozen, the projector and language model are pretrained on shapes-world
   captions ("Describe the image." -> "three shapes: two red, zero green, one blue and zero yellow. two
   red circles and one blue square.", half of them with digits: "3 shapes: 2 red, 0 green, ...").
So it knows the images' vocabulary, but it never sees the downstream question formats. (Training the
vision tower jointly from random init on captions alone collapses: the LM learns the caption prior
and ignores the image; measured during development.) It is saved with `save_pretrained` and loads through `AutoProcessor` /
`AutoModelForImageTextToText` exactly like a hub model.

The build is deterministic (seeded) and cached under `$VLMTUNE_CACHE` (default ~/.cache/vlmtune),
keyed by a hash of the build settings, so the first run pays for it and later runs load it.

    vlmtune/models/tiny.py -> build_base(TinyBaseConfig()) -> Path to a model directory
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# The chat template is the model's own (saved with it); vlmtune never hand-formats prompts.
# Content may be a string (with <image> placeholders) or a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "<unk>", "<image>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TINY_TAG = "vlmtune-tiny-llava"


@dataclass(frozen=True)
class TinyBaseConfig:
    """How the tiny base is built. Every field enters the cache key."""
    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 3
    text_hidden: int = 192
    text_layers: int = 4
    heads: int = 4
    vocab_size: int = 640
    vision_steps: int = 250
    vision_lr: float = 2e-3
    pretrain_examples: int = 4000
    pretrain_epochs: int = 3
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 32
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({"tag": TINY_TAG, "v": 4, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(os.environ.get("VLMTUNE_CACHE", Path.home() / ".cache" / "vlmtune"))


def tokenizer_corpus() -> list[str]:
    """Text the tokenizer is trained on: the shapes-world vocabulary plus plain English/digit coverage."""
    from vlmtune.data.synth import CAPTION_PROMPT, CLASSIFY_LABELS, CLASSIFY_PROMPT, COUNT_PROMPT
    from vlmtune.data.synth.shapes import COLORS, KINDS, NUMBER_WORDS, SIZES

    lines = [CAPTION_PROMPT, CLASSIFY_PROMPT, " ".join(CLASSIFY_LABELS)]
    lines += [COUNT_PROMPT.format(color=c) for c in COLORS]
    for n in NUMBER_WORDS:
        for c in COLORS:
            for k in KINDS:
                lines.append(f"{n} shapes: {n} {c} {k} and {n} {c} {k}s, {n} {k}s.")
    lines += [" ".join(SIZES), " ".join(str(i) for i in range(100)), "0 1 2 3 4 5 6 7 8 9 10 11 12",
              "The answer is . There are a an the of in this image what which how many is most common."]
    return lines * 4


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                   padding_side="left", chat_template=CHAT_TEMPLATE)
    # Rendered prompts already begin with the role marker; no BOS is added so prompt/answer boundaries stay clean.
    fast.add_bos_token = False
    return fast


def build_processor(cfg: TinyBaseConfig):
    from transformers import CLIPImageProcessor, LlavaProcessor

    tok = build_tokenizer(cfg.vocab_size)
    ip = CLIPImageProcessor(size={"shortest_edge": cfg.image_size},
                            crop_size={"height": cfg.image_size, "width": cfg.image_size})
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=cfg.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_model(cfg: TinyBaseConfig, tokenizer):
    """A randomly initialised tiny LLaVA (CLIP vision tower + Llama), seeded."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(cfg.seed)
    vc = CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 2,
                          num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.heads,
                          image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_hidden)
    tc = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * 2,
                     num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                     max_position_embeddings=512, tie_word_embeddings=True,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    n_img = (cfg.image_size // cfg.patch_size) ** 2
    config = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=n_img, projector_hidden_act="gelu", tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_untrained(cfg: TinyBaseConfig, out_dir: str | Path) -> Path:
    """Build and save a randomly initialised tiny model + processor (used by tests and as the pretraining start)."""
    out = Path(out_dir)
    proc = build_processor(cfg)
    model = build_model(cfg, proc.tokenizer)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def pretrain_vision(model, processor, examples, cfg: TinyBaseConfig, *, progress: bool = True) -> float:
    """Stage 1: train the vision tower so each patch token tells which shape (if any) is in its cell.

    Uses the scene ground truth in shapes-world examples' meta. Returns the final loss.
    """
    import torch
    from tqdm.auto import tqdm

    from vlmtune.data.synth.shapes import COLORS, GRID, KINDS
    from vlmtune.train.collate import load_image

    if cfg.patch_size * GRID != cfg.image_size:
        raise ValueError("the vision pretraining objective needs one patch per grid cell "
                         f"(patch_size * {GRID} == image_size), got {cfg.patch_size} and {cfg.image_size}")
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
    for _ in tqdm(range(cfg.vision_steps), desc="pretrain vision", disable=not progress, leave=False):
        idx = torch.randint(0, len(examples), (64,), generator=gen)
        hidden = tower(pixels[idx], output_hidden_states=True).hidden_states[-1][:, 1:]  # [B, cells, D], CLS dropped
        loss = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), labels[idx].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return float(loss.detach())


def build_base(cfg: TinyBaseConfig | None = None, *, cache: str | Path | None = None, progress: bool = True,
               log=print) -> Path:
    """Return the directory of the pretrained tiny base, building and caching it on first use."""
    cfg = cfg or TinyBaseConfig()
    root = Path(cache) if cache else cache_dir()
    final = root / "models" / f"tiny-llava-{cfg.key()}"
    if (final / "vlmtune_build.json").exists():
        return final
    from vlmtune.data.synth import synthesize
    from vlmtune.config import TrainConfig
    from vlmtune.train.trainer import train

    log(f"[tiny] building the tiny base VLM (first use; cached at {final})")
    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tiny-build-", dir=root))
    try:
        from vlmtune.data.example import load_jsonl

        data = synthesize("caption", cfg.pretrain_examples, work / "captions", seed=10_000 + cfg.seed,
                          image_size=cfg.image_size, progress=progress)
        examples = load_jsonl(data)
        processor = build_processor(cfg)
        model = build_model(cfg, processor.tokenizer)
        vision_loss = pretrain_vision(model, processor, examples, cfg, progress=progress)
        log(f"[tiny] stage 1: vision tower pretrained ({cfg.vision_steps} steps, cell loss {vision_loss:.4f})")
        init_dir = work / "init"
        model.save_pretrained(init_dir)
        processor.save_pretrained(init_dir)
        del model
        settings = TrainConfig(method="full", freeze_vision=True, epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr,
                               batch_size=cfg.pretrain_batch_size, warmup_ratio=0.05, weight_decay=0.01,
                               seed=cfg.seed, logging_steps=25, max_length=192, lr_scheduler="cosine",
                               report_to=[])
        result = train(init_dir, examples, [], work / "pretrain", settings, progress=progress, log=log)
        out = work / "model"
        shutil.copytree(result.output_dir, out)
        meta = {"config": asdict(cfg), "key": cfg.key(), "seconds": round(time.time() - t0, 1),
                "vision_cell_loss": vision_loss, "final_caption_loss": result.final_loss, "steps": result.steps}
        (out / "vlmtune_build.json").write_text(json.dumps(meta, indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)  # atomic: a half-built base is never picked up from the cache
        log(f"[tiny] stage 2: caption pretraining, {result.steps} steps, final loss {result.final_loss:.3f}")
        log(f"[tiny] built in {meta['seconds']:.0f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
