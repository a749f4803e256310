"""Answering conversations: one request or a batch of them, with streaming, stop strings and token limits.
Shared by `vlmtune chat`, `vlmtune serve` and the web UI.

    req = ChatRequest([{"role": "user", "content": "<image>\\nHow many red shapes are there?"}], images=[pil])
    [done] = complete(model, processor, [req], on_text=[lambda delta: print(delta, end="")])
    done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens

Requests in one `complete` call share one `generate` (left padded). Greedy answers are those `generate()`
gives the same prompt alone: the batch runs to the longest `max_new_tokens`, and each answer is cut at its
own limit and end token (greedy tokens do not depend on how long decoding goes on after them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN
from vlmtune.errors import DataError
from vlmtune.infer.generate import GREEDY, Sampling, generate_tokens
from vlmtune.processing import Model, Processor, encode_texts, has_image_processor, render, tokenizer_of

OnText = Callable[[str], None]


@dataclass
class ChatRequest:
    """One conversation to answer. `messages` hold one `<image>` placeholder per image of `images` (PIL), in order."""

    messages: list[dict[str, str]]
    images: list[Any] = field(default_factory=list)
    max_new_tokens: int = 256
    sampling: Sampling = GREEDY
    stop: tuple[str, ...] = ()
    fit_to_context: bool = False  # max_new_tokens is a default, not asked for: shorten it to fit the context
    add_generation_prompt: bool = True  # render the assistant's header after the messages (the usual case)
    continue_final: bool = False  # leave the last (assistant) message open, to be continued
    prompt_logprobs: int | None = None  # also return each prompt token's log-prob and this many likeliest others


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end token or a stop string) | "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    prompt_logprobs: list[dict[str, dict[str, Any]] | None] | None = None  # vLLM's format (serve.py)


def context_length(model: Model) -> int | None:
    """The model's context window in tokens (its text model's position limit), if it states one."""
    cfg = model.config
    for c in (getattr(cfg, "text_config", None), cfg):
        n = getattr(c, "max_position_embeddings", None) if c is not None else None
        if n:
            return int(n)
    return None


def end_token_ids(model: Model, processor: Processor) -> set[int]:
    """Token ids that end an answer: the generation config's eos ids and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    eos = tokenizer_of(processor).eos_token_id
    return ids | ({eos} if eos is not None else set())


def prompt_of(processor: Processor, req: ChatRequest) -> str:
    return render(
        processor, req.messages, add_generation_prompt=req.add_generation_prompt, continue_final=req.continue_final
    )


def check_request(model: Model, processor: Processor, req: ChatRequest) -> int:
    """Refuse what the model cannot answer (DataError, with the fix); returns the prompt's length in tokens."""
    placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in req.messages)
    if placeholders != len(req.images):
        raise DataError(
            f"{placeholders} {IMAGE_TOKEN} placeholder(s) in the messages but {len(req.images)} image(s)",
            fix=f"send one image per {IMAGE_TOKEN}, and no literal {IMAGE_TOKEN} in text",
        )
    if req.images and not has_image_processor(processor):
        raise DataError("this model reads text only; it cannot take images", fix="send text, or serve a VLM")
    if req.max_new_tokens < 1:
        raise DataError(f"max tokens must be >= 1, got {req.max_new_tokens}")
    if req.continue_final and (
        req.add_generation_prompt or not req.messages or req.messages[-1]["role"] != "assistant"
    ):
        raise DataError(
            "continue_final_message continues a final assistant message",
            fix="end the messages with the assistant's message and set add_generation_prompt to false",
        )
    try:
        n = len(encode_texts(processor, [prompt_of(processor, req)], [req.images])["input_ids"][0])
    except Exception as e:  # the chat template or the processor refused the conversation
        raise DataError(f"the conversation cannot be encoded for this model ({type(e).__name__}: {e})") from None
    limit = context_length(model)
    if limit is not None and req.fit_to_context and n < limit:
        req.max_new_tokens = min(req.max_new_tokens, limit - n)
    if limit is not None and n + req.max_new_tokens > limit:
        raise DataError(
            f"too many tokens: the prompt has {n} and up to {req.max_new_tokens} new ones were asked for, "
            f"but the model's context holds {limit}",
            fix=f"shorten the conversation or ask for at most {max(0, limit - n)} tokens",
        )
    return n


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to its first stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class TextStream:
    """One answer's text as its tokens arrive: `on_text` gets deltas whose concatenation is the final text
    (leading/trailing whitespace and anything that could still become a stop string are held back)."""

    def __init__(self, tokenizer: Any, req: ChatRequest, end_ids: set[int], on_text: OnText | None) -> None:
        self.tok, self.req, self.end_ids, self.on_text = tokenizer, req, end_ids, on_text
        self.ids: list[int] = []
        self.sent = ""
        self.ended = False
        self.hold = max((len(s) for s in req.stop), default=1) - 1

    def push(self, token_id: int) -> None:
        if self.ended or len(self.ids) >= self.req.max_new_tokens:
            return
        if token_id in self.end_ids:
            self.ended = True
            return
        self.ids.append(token_id)
        text = self.tok.decode(self.ids, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest of it
            return
        text, hit = cut_at_stop(text, self.req.stop)
        if hit:
            self.ended = True
        elif self.hold:
            text = text[: len(text) - self.hold]
        self._emit(text.rstrip())

    def _emit(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            if self.on_text is not None:
                self.on_text(text[len(self.sent) :])
            self.sent = text

    def finish(self, final: str) -> None:
        self._emit(final)


class _BatchStreamer:
    """A transformers streamer for a whole batch: each step's tokens go to their rows' TextStreams."""

    def __init__(self, streams: list[TextStream]) -> None:
        self.streams = streams
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt ids
            self.prompt_seen = True
            return
        for stream, token in zip(self.streams, value.reshape(-1).tolist()):
            stream.push(int(token))

    def end(self) -> None:
        pass


def complete(
    model: Model, processor: Processor, requests: list[ChatRequest], on_text: list[OnText | None] | None = None
) -> list[Completion]:
    """Answer `requests` (sharing one Sampling) in one batch; `on_text[i]` receives request i's text as it grows."""
    sampling = {GREEDY if r.sampling.greedy else r.sampling for r in requests}
    if len(sampling) > 1:
        raise ValueError("one batch decodes with one Sampling; group requests by it")
    tok = tokenizer_of(processor)
    end_ids = end_token_ids(model, processor)
    streams = [TextStream(tok, r, end_ids, cb) for r, cb in zip(requests, on_text or [None] * len(requests))]
    streamer = _BatchStreamer(streams) if on_text and any(on_text) else None
    new, prompt_lengths = generate_tokens(
        model,
        processor,
        [prompt_of(processor, r) for r in requests],
        [list(r.images) for r in requests],
        max_new_tokens=max(r.max_new_tokens for r in requests),
        sampling=sampling.pop(),
        streamer=streamer,
    )
    out = []
    for req, ids, n_prompt, stream in zip(requests, new, prompt_lengths, streams):
        ids = ids[: req.max_new_tokens]
        end = next((i for i, t in enumerate(ids) if t in end_ids), None)
        used = ids if end is None else ids[: end + 1]
        text, hit = cut_at_stop(tok.decode(used, skip_special_tokens=True).lstrip(), req.stop)
        text = text.rstrip()
        stream.finish(text)
        reason = "stop" if end is not None or hit else "length"
        logprobs = None
        if req.prompt_logprobs is not None:
            from vlmtune.infer.score import prompt_logprobs

            logprobs = prompt_logprobs(
                model, processor, prompt_of(processor, req), list(req.images), top=req.prompt_logprobs
            )
        out.append(
            Completion(
                text=text,
                finish_reason=reason,
                prompt_tokens=n_prompt,
                completion_tokens=len(used),
                prompt_logprobs=logprobs,
            )
        )
    return out


@dataclass
class Conversation:
    """A multi-turn chat: messages so far, their image files, and images attached for the next question.

    `ask(text)` builds the request (history + the new question); `answered(...)` records the turn once answered,
    so a refused question leaves the conversation as it was."""

    messages: list[dict[str, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def attach(self, path: str) -> None:
        from pathlib import Path

        from vlmtune.processing import load_image

        load_image(path)  # a missing or broken file is refused now, not at the next question
        self.pending.append(str(Path(path).resolve()))

    def ask(self, text: str, *, max_new_tokens: int = 256, sampling: Sampling = GREEDY) -> ChatRequest:
        from vlmtune.processing import load_image_cached

        paths = self.images + self.pending
        question = {"role": "user", "content": "".join(f"{IMAGE_TOKEN}\n" for _ in self.pending) + text}
        return ChatRequest(
            [*self.messages, question],
            [load_image_cached(p) for p in paths],
            max_new_tokens=max_new_tokens,
            sampling=sampling,
        )

    def answered(self, request: ChatRequest, answer: str) -> None:
        self.messages = [*request.messages, {"role": "assistant", "content": answer}]
        self.images, self.pending = self.images + self.pending, []

    def reset(self) -> None:
        self.messages, self.images, self.pending = [], [], []

    def record(self, id: str = "chat") -> dict[str, Any]:
        """The conversation as a vlmtune JSONL record (task "chat"): it can be read back as data."""
        return {"id": id, "task": "chat", "images": list(self.images), "messages": list(self.messages)}
