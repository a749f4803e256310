"""Qwen2.5-VL: ChatML with a default system turn; its processor needs torchvision (for its video processor)."""

from __future__ import annotations

from typing import Any

from vlmtune.errors import ConfigError
from vlmtune.models.families import HEADS, TEXT_HIDDEN, VISION_HIDDEN, Family, parts, text_kw, torchvision_problem
from vlmtune.registry import FAMILIES

QWEN2_5_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n" + parts("<|vision_start|><|image_pad|><|vision_end|>") + "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@FAMILIES.register("qwen2_5_vl", help="Qwen2_5_VLForConditionalGeneration: Qwen2.5-VL (needs torchvision)")
class Qwen25VL(Family):
    pattern = r"qwen2[._]5[-_]?vl"
    priority = 0
    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    named = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    extra = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
    }
    template = QWEN2_5_VL_TEMPLATE
    end_of_turn = "<|im_end|>"

    def build(self, tok: Any) -> tuple[Any, Any]:
        problem = torchvision_problem()
        if problem:
            # transformers' Qwen2.5-VL processor cannot be built or loaded without its video processor.
            raise ConfigError(
                f"the qwen2_5_vl stand-in needs a working torchvision ({problem}): Qwen2_5_VLProcessor "
                "requires a video processor; install the torchvision build that matches your torch "
                "(torch 2.13 <-> torchvision 0.28; see the README)"
            )
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

        side = 56  # 56x56 -> 4x4 patches of 14 -> 2x2 = 4 merged image tokens
        pixels: dict[str, Any] = dict(
            min_pixels=side * side, max_pixels=side * side, patch_size=14, merge_size=2, temporal_patch_size=2
        )
        ip = Qwen2VLImageProcessor(**pixels)
        # The processor requires its video processor (the stand-in is used for images; the settings match).
        vp = Qwen2VLVideoProcessor(
            size={"shortest_edge": side * side, "longest_edge": side * side},
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
        )
        proc = Qwen2_5_VLProcessor(
            image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN2_5_VL_TEMPLATE
        )
        head_dim = TEXT_HIDDEN // HEADS
        text = dict(text_kw(tok), rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]})  # sums to head_dim/2
        assert sum(text["rope_scaling"]["mrope_section"]) == head_dim // 2, head_dim
        vision = dict(
            depth=1,
            hidden_size=VISION_HIDDEN,
            intermediate_size=VISION_HIDDEN * 2,
            num_heads=HEADS,
            out_hidden_size=TEXT_HIDDEN,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[0],
        )
        # transformers' typed config signatures omit the token ids they take through **kwargs
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision,  # type: ignore[call-arg]
            image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        return Qwen2_5_VLForConditionalGeneration(config), proc
