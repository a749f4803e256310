"""Answer-only logits: the language-model head and cross-entropy run only where the loss is.

A training batch holds prompts of 100-2,000 tokens and answers of 1-10; a full forward computes the logits,
their softmax and its gradient at every position and then masks almost all of them away. For a model with
a large vocabulary (Gemma-3: 262k tokens, an LM head bigger than the rest of Gemma-3 270M) that is most of
the compute and of the activation memory. Here the model runs as usual up to its last hidden states
(through its own forward, so PEFT, DDP and gradient checkpointing see a normal call; the head is asked for
one position only), the hidden states of the positions that carry loss are gathered, and the head plus the
family's logit post-processing run on those alone, in chunks:

    loss, n = answer_only_loss(model, batch, num_items_in_batch)     # batch["labels"]: -100 = no loss

The result equals the full computation (transformers' ForCausalLMLoss: float32 logits, shifted labels, summed
cross-entropy divided by `num_items_in_batch`, or averaged over the loss tokens); `tests/test_loss.py` checks
the loss and the LoRA gradients against it for every model family's stand-in.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100
CHUNK_ELEMENTS = 1 << 25  # logits per chunk ([tokens, vocab] float32: 128 MB), e.g. 128 tokens of Gemma-3's 262k


class Unsupported(Exception):
    """The model's structure is not one answer-only logits knows; the caller falls back to the full forward."""


def unwrap(model: Any) -> Any:
    """The transformers model inside DDP / PEFT wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module  # DDP / DeepSpeed engines
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()  # PEFT
    return model


def post_process(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """The logit post-processing a family's forward applies after its head (on float32 logits).

    Only the model's own (top-level) config counts: Gemma3ForCausalLM soft-caps with its
    `final_logit_softcapping`, while Gemma3ForConditionalGeneration applies none, whatever its text config says."""
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:  # Gemma 2 / Gemma 3 text: tanh soft-capping
        logits = torch.tanh(logits / cap) * cap
    scale = getattr(config, "logit_scale", None)
    if scale:  # Cohere multiplies
        logits = logits * scale
    scaling = getattr(config, "logits_scaling", None)
    if scaling:  # Granite divides
        logits = logits / scaling
    return logits


def _chunk_loss(head: torch.nn.Module, config: Any, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = post_process(config, head(hidden).float())  # [n, V]
    return F.cross_entropy(logits, target, reduction="sum")


def answer_only_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> tuple[torch.Tensor, int]:
    """(loss, number of loss tokens) for a batch with `labels`, computing logits only at the loss positions."""
    base = unwrap(model)
    inner = getattr(base, "model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if not isinstance(inner, torch.nn.Module) or head is None:
        raise Unsupported(f"{type(base).__name__} has no `.model` body and output embeddings")
    labels = inputs["labels"]
    captured: dict[str, torch.Tensor] = {}

    def grab(_module: Any, _args: Any, output: Any) -> None:
        captured["hidden"] = output[0]  # last_hidden_state [B, T, D], the head's input

    handle = inner.register_forward_hook(grab)
    try:
        model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=1, use_cache=False)
    finally:
        handle.remove()
    hidden = captured.get("hidden")
    if hidden is None or hidden.shape[:2] != labels.shape:
        raise Unsupported(f"{type(base).__name__}: the body's output is not [batch, tokens, hidden]")
    shifted = labels[:, 1:]  # position t predicts token t+1
    keep = shifted != IGNORE  # [B, T-1]
    h = hidden[:, :-1][keep]  # [N, D]
    target = shifted[keep]  # [N]
    n = int(target.numel())
    vocab = head.weight.shape[0] if hasattr(head, "weight") else base.config.get_text_config().vocab_size
    step = max(1, CHUNK_ELEMENTS // vocab)
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, n, step):
        hs, ts = h[s : s + step], target[s : s + step]
        if n > step and torch.is_grad_enabled():
            # Recompute the chunk's logits in backward instead of keeping every chunk's [n, V] alive at once.
            total = total + checkpoint(_chunk_loss, head, base.config, hs, ts, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, base.config, hs, ts)
    if n == 0:
        total = total + hidden.sum() * 0.0  # keep the graph connected (a batch with no loss tokens)
    denom = num_items_in_batch if num_items_in_batch is not None else max(n, 1)
    if isinstance(denom, torch.Tensor):
        denom = denom.to(total.device)
    return total / denom, n
