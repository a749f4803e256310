"""Gemma 3 text-only (Gemma-3 270M / 1B): Gemma3ForCausalLM with Gemma 3's turn format."""

from __future__ import annotations

from typing import Any

from vlmtune.models.families import HEADS, TEXT_HIDDEN, Family, text_kw
from vlmtune.models.families.gemma3 import GEMMA3_NAMED, GEMMA3_SPECIALS
from vlmtune.models.gguf import GEMMA3_TEXT_TEMPLATE  # the turn format the Gemma-3 270M cache gets, too
from vlmtune.registry import FAMILIES


@FAMILIES.register("gemma3_text", help="Gemma3ForCausalLM (text): Gemma-3 270M / 1B")
class Gemma3Text(Family):
    pattern = r"gemma[-_]?3[-_]?text|gemma[-_]?3[-_](270m|1b)\b"
    priority = 0
    text_only = True
    specials = GEMMA3_SPECIALS
    named = GEMMA3_NAMED
    template = GEMMA3_TEXT_TEMPLATE
    end_of_turn = "<end_of_turn>"

    def build(self, tok: Any) -> tuple[Any, Any]:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        return Gemma3ForCausalLM(
            Gemma3TextConfig(
                **text_kw(tok), head_dim=TEXT_HIDDEN // HEADS, sliding_window=64, layer_types=["full_attention"]
            )
        ), tok
