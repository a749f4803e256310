"""From Examples to model inputs, shared by training and inference: chat rendering, image loading, encoding.

    text = prompt_text(processor, example)                       # the model's own chat template renders it
    enc = encode_texts(processor, [text], [[load_image_cached(p) for p in example.images]])
    enc = to_model(enc, model)                                    # on the model's device, pixels in its dtype

The model's own chat template renders every prompt (`processor.apply_chat_template`); nothing here
hand-formats "USER: ... ASSISTANT:". For text-only models the "processor" is the tokenizer itself
(`tokenizer_of` returns the tokenizer in both cases).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example
from vlmtune.errors import DataError

Processor = Any  # a transformers ProcessorMixin, or a tokenizer for text-only models
Model = Any  # a transformers PreTrainedModel (or a PEFT wrapper of one)


def tokenizer_of(processor: Processor) -> Any:
    """The tokenizer of a processor; a text-only model's "processor" is its tokenizer."""
    return getattr(processor, "tokenizer", processor)


def has_image_processor(processor: Processor) -> bool:
    return getattr(processor, "image_processor", None) is not None


def to_chat(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Convert string contents with <image> placeholders into the typed-parts form chat templates expect."""
    out = []
    for m in messages:
        parts: list[dict[str, str]] = []
        chunks = m["content"].split(IMAGE_TOKEN)
        for i, chunk in enumerate(chunks):
            if i > 0:
                parts.append({"type": "image"})
            text = chunk.strip("\n") if i > 0 or len(chunks) > 1 else chunk
            if text:
                parts.append({"type": "text", "text": text})
        out.append({"role": m["role"], "content": parts})
    return out


def load_image(path: str) -> Any:
    """An RGB PIL image, fully decoded; a missing or broken file is a DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image not found: {path}", fix="check the path in the data file") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise DataError(f"image cannot be decoded ({type(e).__name__}): {path}") from None


@lru_cache(maxsize=4096)
def load_image_cached(path: str) -> Any:
    """`load_image`, memoised: evaluation and option scoring revisit the same images."""
    return load_image(path)


def render(
    processor: Processor, messages: list[dict], *, add_generation_prompt: bool, continue_final: bool = False
) -> str:
    """The conversation as text, rendered by the model's own chat template. `continue_final`: the last (assistant)
    message is left open, without its end-of-turn, for the model to continue (transformers' continue_final_message)."""
    kw = {"continue_final_message": True} if continue_final else {}
    return processor.apply_chat_template(
        to_chat(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kw
    )


def prompt_text(processor: Processor, ex: Example) -> str:
    """The rendered prompt: the conversation without its final answer, plus the generation prompt."""
    return render(processor, ex.prompt_messages(), add_generation_prompt=True)


def special_tokens_kw(processor: Processor, texts: list[str]) -> dict[str, bool]:
    """Tokenizer switch for text a chat template rendered: templates that write the BOS themselves (Llama 3,
    Gemma 3) would get a second one from a tokenizer that adds it, so it is then turned off. Templates
    without it (LLaVA-1.5's "USER: ...") keep the tokenizer's own BOS."""
    bos = getattr(tokenizer_of(processor), "bos_token", None)
    if bos and texts and all(t.startswith(bos) for t in texts):
        return {"add_special_tokens": False}
    return {}


def encode_texts(
    processor: Processor, texts: list[str], images: list[list[Any]] | None = None, *, padding: bool = False
) -> Any:
    """Processor (or tokenizer) call for rendered texts; `images` holds one list of PIL images per text.

    Images stay nested per text: processors that split them by prompt (Gemma 3) need it; others flatten.
    Returns the processor's BatchEncoding of tensors (batch dimension = len(texts)).
    """
    kw: dict[str, Any] = {"text": texts, "return_tensors": "pt", **special_tokens_kw(processor, texts)}
    if padding:
        kw["padding"] = True
    if images and any(images):
        kw["images"] = images
    if has_image_processor(processor):
        return processor(**kw)
    return tokenizer_of(processor)(**kw)


def example_inputs(processor: Processor, examples: list[Example]) -> dict[str, Any]:
    """Model inputs an example carries besides its text and images, batched: a memory connector's processor
    (`vlmtune.models.connector.ConnectorProcessor`) gives each example's stored memory embeddings; other
    processors give none."""
    extra = getattr(processor, "example_inputs", None)
    return extra(examples) if extra is not None else {}


def model_device(model: Model) -> Any:
    return next(p for p in model.parameters()).device


def to_model(enc: Any, model: Model) -> dict[str, Any]:
    """Encoded inputs on the model's device, with floating pixel values in the model's dtype."""
    import torch

    device = model_device(model)
    out = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in enc.items()}
    if "pixel_values" in out and out["pixel_values"].is_floating_point():
        out["pixel_values"] = out["pixel_values"].to(next(model.parameters()).dtype)
    return out


def image_token_id(processor: Processor) -> int | None:
    tok = tokenizer_of(processor)
    token = getattr(processor, "image_token", None) or getattr(tok, "image_token", None)
    if token is None:
        return None
    return tok.convert_tokens_to_ids(token)
