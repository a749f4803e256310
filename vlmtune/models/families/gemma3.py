"""Gemma 3 (seed 001): SigLIP tower, a projector without linear layers, "<start_of_turn>user\\n...<end_of_turn>"."""

from __future__ import annotations

from typing import Any

from vlmtune.models.families import HEADS, TEXT_HIDDEN, VISION_HIDDEN, Family, parts, text_kw
from vlmtune.registry import FAMILIES

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    + parts("<start_of_image>")
    + "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GEMMA3_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
GEMMA3_NAMED = dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


@FAMILIES.register("gemma3", help="Gemma3ForConditionalGeneration: Gemma-3-4B/12B/27B-it (seed 001)")
class Gemma3(Family):
    pattern = r"gemma[-_]?3"
    specials = GEMMA3_SPECIALS
    named = GEMMA3_NAMED
    extra = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    template = GEMMA3_TEMPLATE
    end_of_turn = "<end_of_turn>"

    def build(self, tok: Any) -> tuple[Any, Any]:
        import torch
        from transformers import (
            Gemma3Config,
            Gemma3ForConditionalGeneration,
            Gemma3ImageProcessor,
            Gemma3Processor,
            Gemma3TextConfig,
            SiglipVisionConfig,
        )

        size, patch, n_img = 32, 8, 4  # 4x4 SigLIP patches, average-pooled to 2x2 = 4 soft tokens
        ip = Gemma3ImageProcessor(size={"height": size, "width": size})
        proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=n_img, chat_template=GEMMA3_TEMPLATE)
        vc = SiglipVisionConfig(
            hidden_size=VISION_HIDDEN,
            intermediate_size=VISION_HIDDEN * 2,
            num_hidden_layers=1,
            num_attention_heads=HEADS,
            image_size=size,
            patch_size=patch,
            vision_use_head=False,
        )
        tc = Gemma3TextConfig(
            **text_kw(tok), head_dim=TEXT_HIDDEN // HEADS, sliding_window=64, layer_types=["full_attention"]
        )
        # transformers' typed config signatures omit the token ids they take through **kwargs
        config = Gemma3Config(
            text_config=tc,
            vision_config=vc,
            mm_tokens_per_image=n_img,  # type: ignore[call-arg]
            boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
            eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
            image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        model = Gemma3ForConditionalGeneration(config)
        # Gemma-3 initialises its projector matrix to zeros (the real checkpoints are trained): left so, the
        # stand-in's images would reach the language model as zeros and nothing upstream of it could learn.
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
        return model, proc
