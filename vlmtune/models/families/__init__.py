"""Model families: how vlmtune recognises an architecture, renders its chat turns, and stands in for it.

A family is one file in this package: a `Family` subclass registered with `@FAMILIES.register("name")`.
It names the hub ids it stands for (`pattern`), its special tokens and turn template, and builds a tiny
random-weight stand-in: same architecture class, processor type and chat-template turn syntax as the
real checkpoint, shrunk so a build takes a second or two.

    family_of("llava-hf/llava-v1.6-mistral-7b-hf")         # "llava_next"
    path = build_standin("gemma3", "/tmp/gemma3")           # Gemma3ForConditionalGeneration + Gemma3Processor
    model, processor = load_model(ModelConfig(name=str(path)))

The stand-ins let tests exercise each family's code path (chat template, image-token expansion, loss mask,
LoRA targets, generation, merge, 4-bit) offline, and `run --smoke` check a recipe on a laptop. Templates are
written here in each family's own turn format (not downloaded), and each tokenizer is a small byte-level BPE
trained locally with the family's special tokens. Text widths are 64 so bitsandbytes' CPU 4-bit kernels
(block size 64) work.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from vlmtune.errors import ConfigError
from vlmtune.registry import FAMILIES

TEXT_HIDDEN = 64  # bitsandbytes' CPU 4-bit matmul needs widths divisible by 64
VISION_HIDDEN = 32
HEADS = 2
VOCAB = 400
SEED = 0

# Content may be a string or a list of {"type": "image"|"text"} parts (what processing.to_chat produces).
_PARTS = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)


def parts(image: str) -> str:
    """Template text for a message's content, writing `image` where an image part stands."""
    return _PARTS.replace("IMAGE", image)


class Family:
    """One architecture family. Subclasses set the class attributes and `build`."""

    pattern: ClassVar[str] = ""  # regex on a lower-cased hub id / path / model_type
    priority: ClassVar[int] = 1  # lower is tried first (more specific patterns first)
    text_only: ClassVar[bool] = False  # no vision tower
    specials: ClassVar[list[str]] = []  # special tokens of the stand-in tokenizer
    named: ClassVar[dict[str, str]] = {}  # bos/eos/pad/unk tokens
    extra: ClassVar[dict[str, str]] = {}  # extra_special_tokens (image_token, ...)
    template: ClassVar[str] = ""  # the family's chat template, in its own turn syntax
    end_of_turn: ClassVar[str] = ""  # the token a template closes an assistant turn with

    def build(self, tok: Any) -> tuple[Any, Any]:
        """(model, processor) of a seeded tiny random-weight stand-in, given its tokenizer."""
        raise NotImplementedError


def names() -> list[str]:
    return FAMILIES.names()


def get(name: str) -> Family:
    return FAMILIES.get(name)()


def text_only_families() -> list[str]:
    return [n for n in names() if get(n).text_only]


def end_of_turn_token(family: str) -> str:
    """The token a family's template closes an assistant turn with (what the loss mask must include)."""
    return get(family).end_of_turn


def family_of(model: object) -> str:
    """Family of a hub id, a local path, a config object or a model_type string.

    family_of("llava-hf/llava-v1.6-mistral-7b-hf") == "llava_next"; family_of(cfg) uses cfg.model_type.
    """
    text = getattr(model, "model_type", None) or str(model)
    key = text.lower()
    for name in sorted(names(), key=lambda n: (get(n).priority, n)):
        if re.search(get(name).pattern, key):
            return name
    raise ConfigError(f"cannot tell the model family of '{text}'; known families: {', '.join(names())}")


def build_tokenizer(family: str) -> Any:
    """Small byte-level BPE trained locally on the shapes-world corpus, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vlmtune.models.tiny import tokenizer_corpus

    fam = get(family)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=fam.specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(tokenizer_corpus() + ["USER: ASSISTANT: user model assistant system"], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **fam.named,
        extra_special_tokens=fam.extra,
        padding_side="left",
        chat_template=fam.template,
    )
    # The templates write the BOS themselves (or have none); the tokenizer adds nothing.
    fast.add_bos_token = False  # type: ignore[misc]  # settable at runtime; typed as a read-only property
    return fast


def text_kw(tok: Any) -> dict:
    """Shared text-model config values of the stand-ins."""
    return dict(
        vocab_size=len(tok),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_HIDDEN * 2,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def clip_config(image_size: int, patch: int) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_HIDDEN * 2,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        image_size=image_size,
        patch_size=patch,
        projection_dim=VISION_HIDDEN,
    )


def build_standin(family: str, out_dir: str | Path) -> Path:
    """Build a seeded tiny random-weight model + processor of `family` and save_pretrained both to out_dir."""
    import torch

    fam = get(family)
    out = Path(out_dir)
    tok = build_tokenizer(family)
    torch.manual_seed(SEED)
    model, proc = fam.build(tok)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def torchvision_problem() -> str | None:
    """Why torchvision cannot be used here (None when it imports). A torchvision built for another torch is
    installed but fails at import ('operator torchvision::nms does not exist'), so presence is not enough."""
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # ImportError, or RuntimeError from a build that does not match torch
        return f"{type(e).__name__}: {e}"
    return None
