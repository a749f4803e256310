"""Where the teacher's answers come from: an OpenAI-compatible endpoint, or a model vlmtune loads itself.

    backend = make_backend(tcfg, cache_path)       # teach.backend: openai | local
    responses = backend.run(requests)              # one ChatResponse per ChatRequest, cached by request key

Both keep the same JSONL response cache (`vlmtune.infer.remote.ResponseCache`), keyed the same way, so an
interrupted local run resumes too. `local` (offline) loads `teach.model` through `vlmtune.build.resolve_model`
and `load_model`, and answers with `vlmtune.infer.generate.generate` (batched, greedy, left padding):
  - its cache key names the model and a hash of its weights (`local:<name>@<hash>`);
  - a text-only model (gemma3-270m) gets the text without the images (a warning says so: its answers are
    not grounded in the image; the agreement filter judges them);
  - `stop` sequences cut the text where the first one starts (finish_reason "stop"); a text that fills
    `max_tokens` (re-tokenized) has finish_reason "length";
  - usage counts the rendered prompt's tokens and the answer's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmtune.config import ModelConfig, TeachConfig
from vlmtune.data.example import IMAGE_TOKEN, Example
from vlmtune.errors import ConfigError
from vlmtune.infer.remote import (
    ChatRequest,
    ChatResponse,
    RemoteClient,
    RemoteConfig,
    ResponseCache,
    Summary,
    request_key,
)

log = logging.getLogger(__name__)


def remote_config(tcfg: TeachConfig) -> RemoteConfig:
    return RemoteConfig(
        base_url=tcfg.base_url,
        model=tcfg.model,
        api_key=os.environ.get(tcfg.api_key_env),
        concurrency=tcfg.concurrency,
        rpm=tcfg.rpm,
        tpm=tcfg.tpm,
        timeout=tcfg.timeout,
        max_retries=tcfg.max_retries,
        context_tokens=tcfg.context_tokens or None,
    )


class LocalBackend:
    """Greedy batched generation with a model vlmtune loads (offline)."""

    def __init__(self, tcfg: TeachConfig, cache: str | os.PathLike):
        if tcfg.temperature != 0:
            raise ConfigError(
                f"teach.backend=local decodes greedily; teach.temperature must be 0, got {tcfg.temperature}"
            )
        self.tcfg = tcfg
        self.cache = ResponseCache(cache)
        self.summary = Summary()
        self._loaded: tuple[Any, Any] | None = None
        self._model_id: str | None = None

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            from vlmtune.build import resolve_model
            from vlmtune.models.load import dir_hash

            self._ref = resolve_model(ModelConfig(name=self.tcfg.model))
            self._model_id = f"local:{self._ref.name}@{dir_hash(self._ref.path)}"
        return self._model_id

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from vlmtune.models.load import load_model

            _ = self.model_id  # resolves the name (a property with a side effect)
            self._loaded = load_model(self._ref)
        return self._loaded

    def run(self, requests: Sequence[ChatRequest], *, desc: str = "teacher") -> list[ChatResponse]:
        t0 = time.monotonic()
        keys = [request_key(self.model_id, r) for r in requests]
        todo: dict[str, ChatRequest] = {}
        for k, r in zip(keys, requests):
            if self.cache.get(k) is None and k not in todo:
                todo[k] = r
        s = self.summary = Summary(requests=len(requests), unique=len(set(keys)), cached=len(set(keys)) - len(todo))
        if todo:
            self._generate(todo, desc)
        s.seconds = time.monotonic() - t0
        log.info(f"[teach] {s.line()}")
        return [ChatResponse(**{**self.cache.get(k).__dict__, "cached": k not in todo}) for k in keys]

    def _generate(self, todo: dict[str, ChatRequest], desc: str) -> None:
        from vlmtune.infer.generate import generate
        from vlmtune.processing import has_image_processor, prompt_text, tokenizer_of

        model, processor = self._model()
        tok = tokenizer_of(processor)
        vision = has_image_processor(processor)
        if not vision and any(r.images for r in todo.values()):
            log.warning(
                f"[teach] {self.tcfg.model} is a text-only model: the images are not shown to it, so its "
                "answers are not grounded in the image (the agreement filter judges them)"
            )
        items = list(todo.items())
        bs = max(1, self.tcfg.batch_size)
        log.info(f"[teach] {len(items)} requests to {self.model_id} (local, batches of {bs})")
        for i in range(0, len(items), bs):
            chunk = items[i : i + bs]
            t0 = time.monotonic()
            examples = [self._example(k, r, vision) for k, r in chunk]
            budget = int(chunk[0][1].params.get("max_tokens") or 256)
            texts = generate(model, processor, examples, batch_size=bs, max_new_tokens=budget, desc=desc)
            secs = (time.monotonic() - t0) / len(chunk)
            for (key, req), ex, text in zip(chunk, examples, texts):
                text, finish = _apply_stop(text, req.params.get("stop") or [])
                if finish is None:
                    finish = "length" if len(tok(text, add_special_tokens=False)["input_ids"]) >= budget - 1 else "stop"
                pt = len(tok(prompt_text(processor, ex), add_special_tokens=False)["input_ids"])
                resp = ChatResponse(
                    key=key,
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=pt,
                    completion_tokens=len(tok(text, add_special_tokens=False)["input_ids"]),
                    model=self.model_id,
                    attempts=1,
                    seconds=round(secs, 3),
                )
                self.cache.append(resp)
                s = self.summary
                s.sent += 1
                s.ok += 1
                s.prompt_tokens += resp.prompt_tokens or 0
                s.completion_tokens += resp.completion_tokens or 0

    @staticmethod
    def _example(key: str, req: ChatRequest, vision: bool) -> Example:
        msgs = [dict(m) for m in req.messages]
        if not vision:
            for m in msgs:
                m["content"] = m["content"].replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "")
        return Example(id=key, task="teacher", messages=msgs, images=list(req.images) if vision else [])


def _apply_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut].rstrip(), "stop") if cut >= 0 else (text, None)


class OpenAIBackend(RemoteClient):
    """RemoteClient with the teacher's settings; model_id is the endpoint's model name."""

    def __init__(self, tcfg: TeachConfig, cache: str | os.PathLike):
        super().__init__(remote_config(tcfg), cache)

    @property
    def model_id(self) -> str:
        return self.cfg.model


def make_backend(tcfg: TeachConfig, cache: str | os.PathLike) -> LocalBackend | OpenAIBackend:
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    if tcfg.backend == "local":
        return LocalBackend(tcfg, cache)
    return OpenAIBackend(tcfg, cache)
