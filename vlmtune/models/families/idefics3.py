"""Idefics3 / SmolVLM: "User:<image>...<end_of_utterance>\\nAssistant: answer<end_of_utterance>\\n"."""

from __future__ import annotations

from typing import Any

from vlmtune.models.families import HEADS, VISION_HIDDEN, Family, parts, text_kw
from vlmtune.registry import FAMILIES

IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + parts("<image>")
    + "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@FAMILIES.register("idefics3", help="Idefics3ForConditionalGeneration: Idefics3, SmolVLM")
class Idefics3(Family):
    pattern = r"idefics3|smolvlm"
    priority = 0
    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
    ] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    named = dict(bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", pad_token="<|end_of_text|>")
    extra = {"image_token": "<image>"}
    template = IDEFICS3_TEMPLATE
    end_of_turn = "<end_of_utterance>"

    def build(self, tok: Any) -> tuple[Any, Any]:
        from transformers import (
            Idefics3Config,
            Idefics3ForConditionalGeneration,
            Idefics3ImageProcessor,
            Idefics3Processor,
            Idefics3VisionConfig,
            LlamaConfig,
        )

        size, patch, scale = 32, 8, 2  # 4x4 patches, pixel-shuffled by 2 -> 4 image tokens; no image splitting
        n_img = (size // patch) ** 2 // scale**2
        ip = Idefics3ImageProcessor(
            size={"longest_edge": size}, max_image_size={"longest_edge": size}, do_image_splitting=False
        )
        proc = Idefics3Processor(
            image_processor=ip, tokenizer=tok, image_seq_len=n_img, chat_template=IDEFICS3_TEMPLATE
        )
        vc = Idefics3VisionConfig(
            hidden_size=VISION_HIDDEN,
            intermediate_size=VISION_HIDDEN * 2,
            num_hidden_layers=1,
            num_attention_heads=HEADS,
            image_size=size,
            patch_size=patch,
        )
        # transformers' typed config signatures omit the token ids they take through **kwargs
        config = Idefics3Config(
            vision_config=vc,
            text_config=LlamaConfig(**text_kw(tok)),
            scale_factor=scale,  # type: ignore[call-arg]
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            pad_token_id=tok.pad_token_id,
        )
        return Idefics3ForConditionalGeneration(config), proc
