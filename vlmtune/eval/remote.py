"""eval.backend=openai: an OpenAI-compatible server answers the evaluation (vLLM, SGLang, Ollama, an API model,
`vlmtune serve`), through the one client vlmtune has (`vlmtune.infer.remote.RemoteClient`).

    evaluate_remote(examples, task, "runs/eval-vllm", label="qwen-vllm", ecfg=EvalConfig(backend="openai",
                    endpoint="http://localhost:8000/v1", model="Qwen/Qwen2.5-VL-3B-Instruct"))

What the server receives is what the hf backend renders: each example's conversation without its final answer,
as chat messages (images as base64 data URLs where their `<image>` stood), greedy (`temperature: 0`) with
`max_tokens` = eval.max_new_tokens. The server applies its own chat template, so the fingerprint's
`chat_template_hash` (and `image_size`) are the server's, unknown here: `compare` against an hf evaluation lists
them (and `backend`, `prompt_hash`) as differences and asks for --allow-mismatch. Answers are stripped as the hf
backend strips them, then parsed and scored by the task as usual.

Every response goes to a JSONL cache (eval.cache, default `responses.jsonl` in the evaluation directory) as it
arrives: rerunning an interrupted evaluation sends only what is missing, rerunning a finished one sends nothing
(a re-score after a parser change is free). A request that still fails after its retries stops the evaluation
with the count; the rerun asks only those again.

eval.mode=loglik (and both) needs the log-probability of every prompt token, which vLLM returns for chat requests
with `prompt_logprobs` and renders a final assistant message complete (`add_generation_prompt: false`) or open
(`continue_final_message: true`). Per example and option k it asks 1 + 2k requests (`max_tokens: 1`): the prompt
with the generation prompt, the conversation with option k as the assistant's complete answer, and the same left
open. An option's score is the sum of the log-probabilities of the complete rendering's tokens from where it
stops matching the prompt's through the first token after the open rendering (the end-of-turn token): the same
tokens the hf backend scores (`vlmtune.infer.score`). A server that returns no prompt log-probabilities (Ollama,
OpenAI's API) is found with the first request and named in a ConfigError.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vlmtune.config import EvalConfig, check_eval
from vlmtune.data.example import Example
from vlmtune.errors import ConfigError, DataError, VlmtuneError
from vlmtune.eval.run import assemble_fingerprint, evaluate_with, library_versions
from vlmtune.infer.remote import ChatRequest, ChatResponse, RemoteClient, RemoteConfig, canonical_json
from vlmtune.models.load import text_hash
from vlmtune.tasks.base import Task

log = logging.getLogger(__name__)

UNKNOWN = "unknown (applied by the server)"
LOGLIK_NEEDS = (
    "eval.mode=loglik needs the log-probability of every prompt token: `prompt_logprobs` in "
    "/v1/chat/completions, with the chat-template switches `add_generation_prompt` and "
    "`continue_final_message` (vLLM has them, and so does `vlmtune serve`; Ollama and OpenAI's API do not)"
)


def redact(url: str) -> str:
    """The URL without user info, query or fragment (where keys sometimes ride along)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def remote_config(ecfg: EvalConfig, model: str) -> RemoteConfig:
    return RemoteConfig(
        base_url=ecfg.endpoint,
        model=model,
        api_key=os.environ.get(ecfg.api_key_env),
        concurrency=ecfg.concurrency,
        rpm=ecfg.rpm,
        tpm=ecfg.tpm,
        timeout=ecfg.timeout,
        max_retries=ecfg.max_retries,
        context_tokens=ecfg.context_tokens or None,
    )


def listed_model(client: RemoteClient, wanted: str) -> tuple[str, dict[str, Any]]:
    """The model to ask (eval.model, or the only one the server lists) and what /v1/models says about it."""
    try:
        listed = client.served_models()
    except Exception as e:  # some servers have no /v1/models; a server that is down fails on the first request
        if not wanted:
            raise ConfigError(
                f"eval.model is empty and {redact(client.cfg.base_url)}/models could not be read "
                f"({type(e).__name__}: {str(e)[:200]}). Fix: give the model name (--model NAME)"
            ) from None
        return wanted, {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    names = [str(m.get("id")) for m in listed]
    if not wanted:
        if len(names) != 1:
            raise ConfigError(
                f"eval.model is empty and the server lists {len(names)} models "
                f"({', '.join(names[:10]) or 'none'}). Fix: choose one with --model NAME"
            )
        wanted = names[0]
    info = next((m for m in listed if str(m.get("id")) == wanted), None)
    if info is None:
        return wanted, {"error": f"not among the models the server lists ({', '.join(names[:10])})"}
    # `created` is the server's start time and `permission` entries carry ids and times: not the model's.
    return wanted, {k: v for k, v in info.items() if k not in ("created", "permission") and v is not None}


class RemoteBackend:
    """eval.backend=openai: the Backend (vlmtune.eval.run) that asks an OpenAI-compatible server."""

    adapter: str | None = None
    option_scoring = "sum of option-token log-probabilities (the server's prompt_logprobs)"

    def __init__(self, ecfg: EvalConfig, cache: str | os.PathLike):
        check_eval(ecfg)
        probe = RemoteClient(remote_config(ecfg, ecfg.model or "?"))
        self.model_name, self.listed = listed_model(probe, ecfg.model)
        self.client = RemoteClient(remote_config(ecfg, self.model_name), cache)
        self.ecfg, self.cache_path = ecfg, Path(cache)
        self.decoding: dict[str, Any] = {"temperature": 0.0}
        self.seen: list[ChatResponse] = []
        self.totals: dict[str, int] = {}

    # -- asking ---------------------------------------------------------------------------------------------
    def _run(self, requests: list[ChatRequest], desc: str) -> list[ChatResponse]:
        responses = self.client.run(requests, desc=desc)
        for k, v in asdict(self.client.summary).items():
            if isinstance(v, int):
                self.totals[k] = self.totals.get(k, 0) + v
        failed = [r for r in responses if not r.ok]
        if failed:
            raise VlmtuneError(
                f"{len(failed)} of {len(responses)} requests to {self.model_name} at {redact(self.ecfg.endpoint)} failed "
                f"after their retries (first: {failed[0].error}). The answers received are in {self.cache_path}; "
                "rerun the same command to ask only the failed ones again (raise eval.timeout or eval.max_retries, "
                "or lower eval.concurrency, if the server is overloaded)"
            )
        self.seen.extend(responses)
        return responses

    def generate(self, examples: list[Example], ecfg: EvalConfig, desc: str, *, shard: bool = True) -> list[str]:
        params = {"temperature": 0.0, "max_tokens": ecfg.max_new_tokens}
        requests = [
            ChatRequest(messages=ex.prompt_messages(), images=list(ex.images), params=params) for ex in examples
        ]
        return [(r.text or "").strip() for r in self._run(requests, desc)]

    def score(self, examples: list[Example], options: list[list[str]], ecfg: EvalConfig) -> list[list[float]]:
        def req(ex: Example, answer: str | None, *, open_end: bool = False) -> ChatRequest:
            turn = [] if answer is None else [{"role": "assistant", "content": answer}]
            switches = {
                "prompt_logprobs": 0,
                "add_generation_prompt": answer is None,
                "continue_final_message": open_end,
            }
            return ChatRequest(
                messages=ex.prompt_messages() + turn,
                images=list(ex.images),
                params={"temperature": 0.0, "max_tokens": 1, "extra_body": switches},
            )

        self._probe(req(examples[0], None))
        requests: list[ChatRequest] = []
        for ex, opts in zip(examples, options):
            requests.append(req(ex, None))
            for o in opts:
                requests += [req(ex, o), req(ex, o, open_end=True)]
        responses = iter(self._run(requests, "eval (option scores)"))
        scores = []
        for ex, opts in zip(examples, options):
            prompt = next(responses)
            scores.append([option_score(ex, o, prompt, next(responses), next(responses)) for o in opts])
        return scores

    def _probe(self, request: ChatRequest) -> None:
        """One request first: a server without prompt log-probabilities is named before hundreds are sent."""
        try:
            [first] = self._run([request], "eval (probe)")
        except VlmtuneError as e:
            raise ConfigError(
                f"{LOGLIK_NEEDS}. The server at {redact(self.ecfg.endpoint)} refused the request: "
                f"{e}. Fix: use eval.mode=generate, or serve the model with vLLM"
            ) from None
        if not first.prompt_logprobs:
            raise ConfigError(
                f"{LOGLIK_NEEDS}. The server at {redact(self.ecfg.endpoint)} answered without them. "
                "Fix: use eval.mode=generate, or serve the model with vLLM (`vllm serve MODEL`)"
            )

    # -- recording ------------------------------------------------------------------------------------------
    def fingerprint(self, task: Task, examples: list[Example], decoding: dict[str, Any]) -> dict[str, Any]:
        messages = canonical_json([ex.prompt_messages() for ex in examples[:50]])
        server = {
            "endpoint": redact(self.ecfg.endpoint),
            "model": self.model_name,
            "listed": self.listed,
            "answered_by": sorted({r.model for r in self.seen if r.model}),
            "system_fingerprint": sorted({r.system_fingerprint for r in self.seen if r.system_fingerprint}),
        }
        try:
            client_version = md.version("openai")
        except md.PackageNotFoundError:
            client_version = "not installed"
        return assemble_fingerprint(
            {"model": self.model_name, "model_hash": None, "adapter": None, "adapter_hash": None},
            {"prompt_hash": "messages:" + text_hash(messages), "chat_template_hash": UNKNOWN, "image_size": UNKNOWN},
            task=task,
            examples=examples,
            decoding=decoding,
            backend="openai",
            extra={"server": server},
            versions={**library_versions(), "openai": client_version},
        )

    def files(self) -> dict[str, Any]:
        """remote.json: what the run cost and where its answers are kept."""
        return {
            "remote.json": {
                "endpoint": redact(self.ecfg.endpoint),
                "model": self.model_name,
                "cache": str(self.cache_path),
                **self.totals,
            }
        }


def option_score(ex: Example, option: str, prompt: ChatResponse, full: ChatResponse, open_: ChatResponse) -> float:
    """The sum of the log-probabilities of `option`'s tokens and the end-of-turn token after them (module docstring),
    from three responses' prompt_logprobs: the prompt, the complete answer, the open answer."""
    p, f, o = (ids_of(r, ex, option) for r in (prompt, full, open_))
    start = next((i for i in range(1, min(len(p), len(f))) if p[i] != f[i]), min(len(p), len(f)))
    end = next((i for i in range(1, min(len(o), len(f))) if o[i] != f[i]), len(o))
    if end < len(o) or end >= len(f) or start > end:
        raise DataError(
            f"example '{ex.id}', option {option!r}: the server's renderings do not nest (prompt "
            f"{len(p)} tokens, open answer {len(o)}, complete answer {len(f)}, differing at {start} and "
            f"{end}); it may ignore add_generation_prompt / continue_final_message",
            fix="evaluate with eval.mode=generate against this server, or serve the model with vLLM",
        )
    entries = (full.prompt_logprobs or [])[start : end + 1]
    if any(e is None for e in entries):
        raise DataError(
            f"example '{ex.id}', option {option!r}: the server gave no log-probability for an answer token",
            fix="evaluate with eval.mode=generate against this server, or serve the model with vLLM",
        )
    return float(sum(e[1] for e in entries if e is not None))


def ids_of(r: ChatResponse, ex: Example, option: str) -> list[int | None]:
    if not r.prompt_logprobs:
        raise ConfigError(f"{LOGLIK_NEEDS}; a response for example '{ex.id}' (option {option!r}) has none")
    return [None if e is None else int(e[0]) for e in r.prompt_logprobs]


def evaluate_remote(
    examples: list[Example], task: Task, out_dir: str | Path, *, label: str | None = None, ecfg: EvalConfig
) -> dict[str, Any]:
    """Evaluate the model an OpenAI-compatible server serves (eval.backend=openai); returns metrics.json's content."""
    if not examples:
        raise DataError("no examples to evaluate")
    cache = Path(ecfg.cache) if ecfg.cache else Path(out_dir) / "responses.jsonl"
    backend = RemoteBackend(ecfg, cache)
    return evaluate_with(backend, examples, task, out_dir, label=label or backend.model_name, ecfg=ecfg)
