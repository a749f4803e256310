"""Llama 3.x text-only (seed 002): header ids and <|eot_id|>."""

from __future__ import annotations

from typing import Any

from vlmtune.models.families import Family, parts, text_kw
from vlmtune.registry import FAMILIES

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n" + parts("") + "<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@FAMILIES.register("llama", help="LlamaForCausalLM (text): Llama-3.x (seed 002)")
class Llama(Family):
    pattern = r"llama"
    priority = 2  # after llava ("xtuner/llava-llama-3-8b" is a LLaVA)
    text_only = True
    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|finetune_right_pad_id|>",
    ]
    named = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>")
    template = LLAMA3_TEMPLATE
    end_of_turn = "<|eot_id|>"

    def build(self, tok: Any) -> tuple[Any, Any]:
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**text_kw(tok), tie_word_embeddings=True)), tok
