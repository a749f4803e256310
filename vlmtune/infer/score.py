"""Log-likelihood scoring of a closed set of options (MCQ choices, VisDial's 100 candidates): no parse failures.

    scores = score_options(model, processor, examples)            # options default to each ex.options
    best = [max(range(len(s)), key=s.__getitem__) for s in scores]

What is scored: each option is rendered by the model's own chat template as the assistant's answer to the
example's prompt (`prompt_messages()`), and its score is the sum of the log-probabilities of the tokens that
follow the generation prompt, up to and including the first end-of-turn token (the tokenizer's EOS or the
generation config's EOS ids). Counting the end-of-turn token is what tells "2" from "20": without it, "2" scores
the probability that the answer *starts* with 2. Anything the template adds after the end-of-turn token (e.g. a
newline) is not scored. `normalize=True` gives the mean log-probability per scored token instead.

How (`score_options`): the prompt and its images go through the model once (`use_cache=True`); its KV cache is
then repeated along the batch dimension (broadcast views; `batch_repeat_interleave` for other layer
types) and the options are fed in batches,
right-padded, with an attention mask over prefix + option tokens and positions continuing after the prefix. This
needs the tokens of prompt+option to be the prompt's tokens followed by the option's; it is checked per option,
and an option whose tokens merge across the boundary is scored with a full forward instead (counted in `stats`).
`score_options_full` is the naive reference (one full forward per option) used by tests and benchmarks.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from vlmtune.data.example import Example
from vlmtune.errors import DataError
from vlmtune.logs import progress_bar
from vlmtune.processing import (
    Model,
    Processor,
    encode_texts,
    example_inputs,
    load_image_cached,
    prompt_text,
    render,
    to_model,
    tokenizer_of,
)


def _encode(processor, model, text: str, images: list, ex: Example | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for one text (image placeholders expanded by the processor) and, given its example, the
    example's other inputs (`example_inputs`), on the model's device/dtype."""
    extra = example_inputs(processor, [ex]) if ex is not None else {}
    return to_model({**encode_texts(processor, [text], [images]), **extra}, model)


def _end_ids(model, processor) -> set[int]:
    """Token ids that end an assistant turn: the tokenizer's EOS and the generation config's EOS id(s)."""
    ids: set[int] = set()
    eos = tokenizer_of(processor).eos_token_id
    if eos is not None:
        ids.add(int(eos))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen is not None:
        ids.update(int(i) for i in (gen if isinstance(gen, (list, tuple)) else [gen]))
    return ids


def _cut_at_end(ids: list[int], end_ids: set[int]) -> list[int]:
    """Keep tokens up to and including the first end-of-turn token (all of them if there is none)."""
    for i, t in enumerate(ids):
        if t in end_ids:
            return ids[: i + 1]
    return ids


def _option_texts(examples: list[Example], options: list[list[str]] | None) -> list[list[str]]:
    if options is not None:
        if len(options) != len(examples):
            raise ValueError(
                f"options has {len(options)} lists for {len(examples)} examples; pass one list per example"
            )
        return [[str(o) for o in opts] for opts in options]
    out = []
    for ex in examples:
        if not ex.options:
            raise DataError(
                f"example '{ex.id}' has no options to score",
                field="options",
                fix="add the closed answer set as 'options', or pass options=... to score_options",
            )
        out.append([str(o) for o in ex.options])
    return out


def _full_text(processor, ex: Example, option: str) -> str:
    """The conversation with `option` as the assistant's answer, rendered by the model's chat template."""
    return render(
        processor, ex.prompt_messages() + [{"role": "assistant", "content": option}], add_generation_prompt=False
    )


def _finish(total: float, n: int, normalize: bool) -> float:
    return total / max(n, 1) if normalize else total


def _score_one_full(
    model, processor, ex: Example, option: str, images: list, prompt_ids: torch.Tensor, end_ids: set[int]
) -> tuple[float, int]:
    """(sum log-prob, n tokens) of one option from one forward over prompt+option.

    Scored tokens start where the full rendering's tokens stop matching the prompt's (the prompt's length when
    the prefix property holds) and end at the first end-of-turn token, inclusive.
    """
    enc = _encode(processor, model, _full_text(processor, ex, option), images, ex)
    ids = enc["input_ids"][0]  # [T]
    n = min(len(ids), len(prompt_ids))
    diff = (ids[:n] != prompt_ids[:n]).nonzero()
    start = int(diff[0]) if len(diff) else n
    target = _cut_at_end(ids[start:].tolist(), end_ids)
    if start == 0 or not target:
        raise DataError(f"example '{ex.id}': option {option!r} adds no tokens after the prompt", field="options")
    logits = model(**enc, use_cache=False).logits[0, start - 1 : start - 1 + len(target)]  # [L, V]
    logp = torch.log_softmax(logits.float(), dim=-1)
    tgt = torch.tensor(target, device=logp.device)
    return float(logp.gather(-1, tgt[:, None]).sum()), len(target)


@torch.inference_mode()
def score_options_full(
    model: Model,
    processor: Processor,
    examples: list[Example],
    options: list[list[str]] | None = None,
    *,
    normalize: bool = False,
) -> list[list[float]]:
    """Reference scorer: one full forward (prompt + images + option) per option. Same scores as `score_options`."""
    opts = _option_texts(examples, options)
    end_ids = _end_ids(model, processor)
    out: list[list[float]] = []
    for ex, ex_opts in progress_bar(list(zip(examples, opts)), desc="score (full)"):
        images = [load_image_cached(p) for p in ex.images]
        prompt_ids = _encode(processor, model, prompt_text(processor, ex), images, ex)["input_ids"][0]
        row = []
        for o in ex_opts:
            total, n = _score_one_full(model, processor, ex, o, images, prompt_ids, end_ids)
            row.append(_finish(total, n, normalize))
        out.append(row)
    return out


def _option_token_ids(
    processor, ex: Example, prompt: str, ex_opts: list[str], end_ids: set[int]
) -> list[list[int] | None]:
    """Each option's tokens after the prompt, or None where prompt+option does not tokenize as prompt + option.

    Text-only tokenization is enough for the check: the processor only expands image placeholders (special
    tokens, which never merge with their neighbours) before calling the same tokenizer.
    """
    tok = tokenizer_of(processor)
    fulls = [_full_text(processor, ex, o) for o in ex_opts]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    f_ids = tok(fulls, add_special_tokens=False)["input_ids"]
    out: list[list[int] | None] = []
    for full, ids in zip(fulls, f_ids):
        ok = full.startswith(prompt) and ids[: len(p_ids)] == p_ids and len(ids) > len(p_ids)
        out.append(_cut_at_end(ids[len(p_ids) :], end_ids) if ok else None)
    return out


def _uses_model_positions(model) -> bool:
    """Models with multimodal rotary positions (Qwen2-VL style mrope) derive positions from their own state."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return isinstance(rope, dict) and "mrope_section" in rope


PACK_MAX_TOKENS = 1024  # option tokens per packed forward (the mask is [tokens, prompt + tokens])


def _can_pack(model, length: int, *, strict: bool = False) -> bool:
    """Whether one packed forward with a 4-D block mask gives the same logits as separate sequences."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    why = None
    if _uses_model_positions(model):
        why = "multimodal rotary positions"
    elif getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        why = f"attention kernel {getattr(model.config, '_attn_implementation', None)!r} takes no 4-D mask"
    elif (
        "sliding_attention" in (getattr(cfg, "layer_types", None) or [])
        and (getattr(cfg, "sliding_window", None) or 0) < length
    ):
        why = "sliding-window layers shorter than the packed sequence"
    if why and strict:
        raise ValueError(f"packing=on is not exact for {type(model).__name__}: {why}")
    return why is None


def _score_packed(
    model, cache, first_logp: torch.Tensor, P: int, tails: list[list[int]], counts: dict[str, int]
) -> list[tuple[float, int]]:
    """(sum log-prob, n tokens) of each option; options fed packed after the cached prompt (see score_options)."""
    device = first_logp.device
    out: list[tuple[float, int] | None] = [None] * len(tails)
    eager = getattr(model.config, "_attn_implementation", None) == "eager"
    groups: list[list[int]] = [[]]
    for i, q in enumerate(tails):
        if groups[-1] and sum(len(tails[k]) - 1 for k in groups[-1]) + len(q) - 1 > PACK_MAX_TOKENS:
            groups.append([])
        groups[-1].append(i)
    for group in groups:
        feed = [i for i in group if len(tails[i]) > 1]
        for i in group:
            out[i] = (float(first_logp[tails[i][0]]), 1)
        if not feed:
            continue
        inp = torch.tensor([t for i in feed for t in tails[i][:-1]], device=device)  # [S]
        S = len(inp)
        pos = torch.cat([P + torch.arange(len(tails[i]) - 1, device=device) for i in feed])  # [S]
        allowed = torch.zeros((S, P + S), dtype=torch.bool, device=device)
        allowed[:, :P] = True
        start = 0
        for i in feed:
            n = len(tails[i]) - 1
            allowed[start : start + n, P + start : P + start + n] = torch.tril(torch.ones((n, n), dtype=torch.bool))
            start += n
        mask = allowed[None, None]  # [1, 1, S, P + S]
        if eager:  # eager attention adds the mask to the scores
            mask = torch.zeros(mask.shape, dtype=model.dtype, device=device).masked_fill(
                ~mask, torch.finfo(model.dtype).min
            )
        logits = model(
            input_ids=inp[None], attention_mask=mask, position_ids=pos[None], cache=cache, use_cache=True
        ).logits[0]  # [S, V]
        cache.crop(P - cache.get_seq_length())  # drop the options: the next group starts from the prompt again
        counts["option_forwards"] += 1
        lp = torch.log_softmax(logits.float(), dim=-1)
        start = 0
        for i in feed:
            q = tails[i]
            n = len(q) - 1
            rest = lp[start : start + n].gather(-1, torch.tensor(q[1:], device=device)[:, None])[:, 0]
            out[i] = (float(first_logp[q[0]]) + float(rest.sum()), len(q))
            start += n
    counts["packed_examples"] += 1
    return [o for o in out if o is not None]


def _score_expanded(
    model,
    cache,
    first_logp: torch.Tensor,
    P: int,
    tails: list[list[int]],
    batch_size: int,
    pad_id: int,
    model_positions: bool,
    counts: dict[str, int],
) -> list[tuple[float, int]]:
    """(sum log-prob, n tokens) of each option, in batches of options against copies of the prompt's cache."""
    device = first_logp.device
    out: list[tuple[float, int] | None] = [None] * len(tails)
    # Shortest first: options of similar length share a batch, so little of each batch is padding.
    todo = sorted(range(len(tails)), key=lambda j: len(tails[j]))
    for s in range(0, len(todo), batch_size):
        idx = todo[s : s + batch_size]
        seqs = [tails[j] for j in idx]
        b, L = len(seqs), max(map(len, seqs))
        target = torch.full((b, L), pad_id, dtype=torch.long, device=device)  # [b, L], right padded
        valid = torch.zeros((b, L), dtype=torch.bool, device=device)
        for r, q in enumerate(seqs):
            target[r, : len(q)] = torch.tensor(q, device=device)
            valid[r, : len(q)] = True
        token_logp = torch.zeros((b, L), device=device)
        token_logp[:, 0] = first_logp[target[:, 0]]  # [b]: 1st option token
        if L > 1:
            # Feed option tokens 0..L-2 after the cached prefix; their logits predict tokens 1..L-1.
            inp = target[:, : L - 1]  # [b, L-1]
            attn = torch.cat(
                [torch.ones((b, P), dtype=torch.long, device=device), valid[:, : L - 1].long()], dim=1
            )  # [b, P + L-1]
            kw: dict[str, Any] = {}
            if not model_positions:
                kw["position_ids"] = (P + torch.arange(L - 1, device=device)).expand(b, L - 1)
            logits = model(
                input_ids=inp, attention_mask=attn, cache=_expand_cache(cache, b), use_cache=True, **kw
            ).logits  # [b, L-1, V]
            counts["option_forwards"] += 1
            lp = torch.log_softmax(logits.float(), dim=-1)
            token_logp[:, 1:] = lp.gather(-1, target[:, 1:, None])[..., 0]
        token_logp = token_logp.masked_fill(~valid, 0.0)
        sums, ns = token_logp.sum(1).tolist(), valid.sum(1).tolist()
        for r, j in enumerate(idx):
            out[j] = (sums[r], ns[r])
    return [o for o in out if o is not None]


def _expand_cache(cache, n: int):
    """A copy of a batch-1 KV cache with batch size n; the original stays untouched (a forward appends to the
    cache it is given). Plain `DynamicLayer`s get broadcast views (no copy: their next update concatenates into
    new tensors anyway, which is the one copy needed); other layer types use `batch_repeat_interleave`."""
    from transformers.cache_utils import DynamicLayer

    c = copy.deepcopy(cache)  # batch 1: cheap
    for layer in c.layers:
        if (
            type(layer) is DynamicLayer
            and layer.is_initialized
            and layer.keys is not None
            and layer.keys.numel()
            and layer.values is not None
        ):
            layer.keys = layer.keys.expand(n, -1, -1, -1)  # [n, H, P, D], a view
            layer.values = layer.values.expand(n, -1, -1, -1)
        else:
            layer.batch_repeat_interleave(n)
    return c


@torch.inference_mode()
def score_options(
    model: Model,
    processor: Processor,
    examples: list[Example],
    options: list[list[str]] | None = None,
    *,
    batch_size: int = 16,
    normalize: bool = False,
    stats: dict[str, int] | None = None,
    packing: str = "auto",
) -> list[list[float]]:
    """Log-likelihood of each option as the assistant's answer; the prompt (and its images) runs once per example.

    Returns one list of scores per example, in option order (sum of token log-probs, or the per-token mean with
    `normalize=True`). `batch_size` is the number of options per forward pass (on CPU 8-16 measured fastest:
    each batch copies the prefix's KV cache once per option; raise it on a GPU). If `stats` is a dict it is filled
    with counts: examples, options, prefix_forwards, option_forwards, fallback_options (scored with a full
    forward because the tokenizer merged tokens across the prompt/option boundary), packed_examples.

    packing: "auto" (default) feeds all of an example's options after the cached prompt as ONE packed sequence with a
    block-diagonal attention mask (each option sees the prompt and its own earlier tokens, positions restart after
    the prompt), so the prompt's cache is never copied; models where that is not exact (multimodal rotary positions,
    sliding-window layers shorter than the sequence, attention kernels without 4-D masks) use batches of
    `batch_size` options against copies of the cache instead. "off" always batches; "on" fails where packing can't.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    opts = _option_texts(examples, options)
    end_ids = _end_ids(model, processor)
    tok = tokenizer_of(processor)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(end_ids), 0)
    model_positions = _uses_model_positions(model)
    counts = {
        "examples": len(examples),
        "options": sum(map(len, opts)),
        "prefix_forwards": 0,
        "option_forwards": 0,
        "fallback_options": 0,
        "packed_examples": 0,
    }
    out: list[list[float]] = []
    for ex, ex_opts in progress_bar(list(zip(examples, opts)), desc="score"):
        images = [load_image_cached(p) for p in ex.images]
        prompt = prompt_text(processor, ex)
        enc = _encode(processor, model, prompt, images, ex)
        P = enc["input_ids"].shape[1]
        pre = model(**enc, use_cache=True, logits_to_keep=1)
        counts["prefix_forwards"] += 1
        first_logp = torch.log_softmax(pre.logits[0, -1].float(), dim=-1)  # [V]: predicts each option's 1st token
        cache = pre.cache
        row: list[float | None] = [None] * len(ex_opts)
        tails = _option_token_ids(processor, ex, prompt, ex_opts, end_ids)
        for j, ids in enumerate(tails):
            if not ids:  # boundary merge (None) or nothing after the prompt ([]): the full forward decides
                total, n = _score_one_full(model, processor, ex, ex_opts[j], images, enc["input_ids"][0], end_ids)
                row[j] = _finish(total, n, normalize)
                counts["fallback_options"] += 1
        todo = [j for j, ids in enumerate(tails) if ids]
        todo_tails = [ids for ids in tails if ids]
        longest = P + min(PACK_MAX_TOKENS, sum(map(len, todo_tails)))
        if packing != "off" and _can_pack(model, longest, strict=packing == "on"):
            scored = _score_packed(model, cache, first_logp, P, todo_tails, counts)
        else:
            scored = _score_expanded(
                model, cache, first_logp, P, todo_tails, batch_size, pad_id, model_positions, counts
            )
        for j, (total, n) in zip(todo, scored):
            row[j] = _finish(total, n, normalize)
        scores = [float(x) for x in row if x is not None]
        assert len(scores) == len(row)  # every option was scored, by the full forward or the cached prompt
        out.append(scores)
    if counts["fallback_options"]:
        warnings.warn(
            f"{counts['fallback_options']} of {counts['options']} options tokenize differently after the "
            "prompt than alone (a merge across the prompt/answer boundary); they were scored with a full "
            "forward each",
            stacklevel=2,
        )
    if stats is not None:
        stats.update(counts)
    return out


@torch.inference_mode()
def prompt_logprobs(
    model: Model, processor: Processor, text: str, images: list, *, top: int = 0
) -> list[dict[str, dict] | None]:
    """Each token's log-probability given the tokens before it, for one rendered text (one forward), in vLLM's
    `prompt_logprobs` format: None for the first token, then `{"<id>": {"logprob", "rank", "decoded_token"}}` with
    the text's own token first and the `top` likeliest tokens after it. `rank` 1 is the likeliest token."""
    enc = _encode(processor, model, text, images)
    ids = enc["input_ids"][0].tolist()
    logp = torch.log_softmax(model(**enc, use_cache=False).logits[0, :-1].float(), dim=-1)  # [T-1, V]
    tok = tokenizer_of(processor)
    out: list[dict[str, dict] | None] = [None]
    for pos, token in enumerate(ids[1:]):
        row = logp[pos]

        def entry(t: int, row: torch.Tensor = row) -> dict:
            lp = float(row[t])
            return {"logprob": lp, "rank": int((row > row[t]).sum()) + 1, "decoded_token": tok.decode([t])}

        here = {str(token): entry(token)}
        for t in row.topk(top).indices.tolist() if top > 0 else []:
            here.setdefault(str(t), entry(t))
        out.append(here)
    return out
