"""LLaVA-1.5 (seed 004): CLIP vision tower + Llama/Vicuna, "USER: <image>\\n... ASSISTANT: answer</s>"."""

from __future__ import annotations

from typing import Any

from vlmtune.models.families import Family, clip_config, parts, text_kw
from vlmtune.registry import FAMILIES

LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}" + parts("") + "\n"
    "{% elif message['role'] == 'user' %}USER: " + parts("<image>\n") + " "
    "{% else %}ASSISTANT: " + parts("") + "</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@FAMILIES.register("llava", help="LlavaForConditionalGeneration: LLaVA-1.5 (seed 004)")
class Llava(Family):
    pattern = r"llava"
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    named = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    extra = {"image_token": "<image>"}
    template = LLAVA_TEMPLATE
    end_of_turn = "</s>"

    def build(self, tok: Any) -> tuple[Any, Any]:
        from transformers import (
            CLIPImageProcessor,
            LlamaConfig,
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaProcessor,
        )

        size, patch = 32, 16  # 2x2 patches -> 4 image tokens
        ip = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        proc = LlavaProcessor(
            image_processor=ip,
            tokenizer=tok,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )
        # transformers' typed config signatures omit the token ids they take through **kwargs
        config = LlavaConfig(
            vision_config=clip_config(size, patch),
            text_config=LlamaConfig(**text_kw(tok)),  # type: ignore[call-arg]
            image_token_index=tok.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
            image_seq_length=(size // patch) ** 2,
            pad_token_id=tok.pad_token_id,
        )
        return LlavaForConditionalGeneration(config), proc
