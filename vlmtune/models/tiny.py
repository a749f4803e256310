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

This module is the model's specification (tokenizer, processor, architecture, chat template); the
two-stage build is a training job, so it lives above the trainer, in `vlmtune.build` (deterministic,
seeded, cached under `$VLMTUNE_CACHE/models/`, keyed by a hash of `TinyBaseConfig`):

    path = build_base(TinyBaseConfig())          # vlmtune.build: the pretrained base's directory
    save_untrained(TinyBaseConfig(), out_dir)    # here: the randomly initialised model + processor
"""

from __future__ import annotations

import hashlib
import json
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
    lines += [
        " ".join(SIZES),
        " ".join(str(i) for i in range(100)),
        "0 1 2 3 4 5 6 7 8 9 10 11 12",
        "The answer is . There are a an the of in this image what which how many is most common.",
    ]
    return lines * 4


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    # Rendered prompts already begin with the role marker; no BOS is added so prompt/answer boundaries stay clean.
    fast.add_bos_token = False  # type: ignore[misc]  # settable at runtime; typed as a read-only property
    return fast


def build_processor(cfg: TinyBaseConfig):
    from transformers import CLIPImageProcessor, LlavaProcessor

    tok = build_tokenizer(cfg.vocab_size)
    ip = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size}, crop_size={"height": cfg.image_size, "width": cfg.image_size}
    )
    return LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(cfg: TinyBaseConfig, tokenizer):
    """A randomly initialised tiny LLaVA (CLIP vision tower + Llama), seeded."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(cfg.seed)
    vc = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_hidden * 2,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden,
    )
    tc = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 2,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    n_img = (cfg.image_size // cfg.patch_size) ** 2
    # transformers' typed config signatures omit the token ids they take through **kwargs
    config = LlavaConfig(
        vision_config=vc,
        text_config=tc,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),  # type: ignore[call-arg]
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=n_img,
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
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
