"""LLaVA-1.6 / LLaVA-NeXT (seed 003): anyres image tiles, passed `image_sizes`; LLaVA's turn format."""

from __future__ import annotations

from typing import Any

from vlmtune.models.families import clip_config, text_kw
from vlmtune.models.families.llava import LLAVA_TEMPLATE, Llava
from vlmtune.registry import FAMILIES


@FAMILIES.register("llava_next", help="LlavaNextForConditionalGeneration: LLaVA-1.6 / LLaVA-NeXT (seed 003)")
class LlavaNext(Llava):
    pattern = r"llava[-_]?next|llava[-_]v1\.6|llava-1\.6"
    priority = 0

    def build(self, tok: Any) -> tuple[Any, Any]:
        from transformers import (
            LlamaConfig,
            LlavaNextConfig,
            LlavaNextForConditionalGeneration,
            LlavaNextImageProcessor,
            LlavaNextProcessor,
        )

        size, patch = 32, 16
        grid = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]  # anyres kept tiny
        ip = LlavaNextImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_grid_pinpoints=grid
        )
        proc = LlavaNextProcessor(
            image_processor=ip,
            tokenizer=tok,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )
        # The real 1.6 checkpoints use a Mistral/Vicuna text model; Llama layers are the same shape class-wise.
        # transformers' typed config signatures omit the token ids they take through **kwargs
        config = LlavaNextConfig(
            vision_config=clip_config(size, patch),
            text_config=LlamaConfig(**text_kw(tok)),  # type: ignore[call-arg]
            image_token_index=tok.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
            image_grid_pinpoints=grid,
            image_seq_length=(size // patch) ** 2,
            pad_token_id=tok.pad_token_id,
        )
        return LlavaNextForConditionalGeneration(config), proc
