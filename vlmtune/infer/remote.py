"""Ask an OpenAI-compatible chat endpoint many questions: cached, resumable, concurrent, rate-limited, retried.

    from vlmtune.infer.remote import ChatRequest, RemoteClient, RemoteConfig

    reqs = [ChatRequest(messages=[{"role": "user", "content": "<image>\\nHow many red shapes are there?"}],
                        images=["scene.png"], params={"temperature": 0.0, "max_tokens": 64}, tag="count-v1")]
    client = RemoteClient(RemoteConfig(base_url="http://localhost:11434/v1", model="gemma3:27b", concurrency=8),
                          cache="out/responses.jsonl")
    responses = client.run(reqs)          # one ChatResponse per request, in order
    client.summary                        # requests, cached, sent, retries, failures, tokens, seconds

Any server that speaks `/v1/chat/completions` works (Ollama's `/v1`, vLLM, SGLang, an API model,
`vlmtune serve`), through the official `openai` client (extra 'remote': `pip install 'vlmtune[remote]'`).

Requests: a `ChatRequest` is vlmtune's message form (`{"role", "content"}` with one `<image>` placeholder per
image, as in an Example) plus the image paths, the sampling parameters sent with it (`temperature`,
`max_tokens`, `top_p`, `seed`, `stop`, ...) and a `tag` for anything else the answer depends on (a prompt
template's version). Images are sent as base64 data URLs in `image_url` parts, where their placeholder is.

Cache and resume: each request is keyed by the SHA-256 of canonical JSON (sorted keys, no spaces) over the
model name, the messages (each image replaced by the SHA-256 of its bytes), the sampling parameters and the
tag. The URL and the API key are not in the key, so the same question to a moved server is not re-asked.
Every response (or final failure) is appended to the cache file as one JSON line as soon as it arrives (one
`write` on a file opened for appending: a kill -9 loses nothing written, and at most cuts the line being written). Rerunning the same requests:
  - sends nothing for keys whose last cache line is a success;
  - retries keys whose last line is a failure;
  - drops a truncated last line (what a kill -9 during a write leaves) and cuts it from the file;
  - sends a key that occurs several times in the input once.
A bad line anywhere but the end is an error naming the file and line (the file was edited by hand).

Politeness: `concurrency` requests in flight at once; `rpm` (requests/min) and `tpm` (tokens/min, prompt +
completion) pace the start of requests evenly (a token budget is reserved from an estimate before a request
and corrected by its `usage` after). 429 and 5xx responses, timeouts, dropped connections and malformed
bodies are retried `max_retries` times with exponential backoff (`backoff` seconds doubling, capped at
`backoff_max`, with jitter); a `Retry-After` (or `retry-after-ms`) header sets the wait instead. `timeout` is per
request. 401/403/404 stop the run at once with a ConfigError (a wrong key, URL or model fails every request), and so
does a server that cannot be reached at all (no request has succeeded and the retries of one are spent).
A progress bar shows requests/min and tokens/min; `summary` (also logged) counts tokens used.

Ollama silently cuts a `/v1` input longer than its context (`num_ctx`) and answers the rest. A response whose
`usage.prompt_tokens` is under half of the prompt's characters / 4 (an English or Korean text never takes
fewer than one token per 8 characters), or reaches `context_tokens` when that is set, is marked
`input_truncated`, counted in the summary and warned about with the fix (raise `num_ctx`).
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import random
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN
from vlmtune.errors import ConfigError
from vlmtune.infer.pacing import Pacer
from vlmtune.infer.responses import (  # noqa: F401  (the client's types, re-exported)
    CACHE_VERSION,
    ChatRequest,
    ChatResponse,
    ResponseCache,
    canonical_json,
    file_sha256,
    request_key,
)
from vlmtune.logs import progress_bar

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # rough text -> tokens estimate (for token pacing and the truncation check)
TRUNCATION_RATIO = 0.5  # prompt_tokens below this share of the estimate = the server cut the input


# ----------------------------------------------------------------------------------------------- records


@dataclass
class Summary:
    """Counts of one `run`: what was asked, what the cache had, what was sent and what it cost."""

    requests: int = 0
    unique: int = 0
    cached: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_truncated: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.sent / self.seconds * 60 if self.seconds > 0 else 0.0
        return (
            f"{self.requests} requests ({self.unique} unique): {self.cached} from the cache, {self.sent} sent, "
            f"{self.ok} answered, {self.failed} failed, {self.retries} retries; tokens used: "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion; "
            f"{self.seconds:.1f}s ({rate:.0f} requests/min)"
        )


# ----------------------------------------------------------------------------------------------- keys


def to_openai_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """vlmtune messages -> OpenAI messages: text parts, and each image as a base64 data URL where it stood."""
    images = iter(req.images)
    out: list[dict[str, Any]] = []
    for m in req.messages:
        if IMAGE_TOKEN not in m["content"]:
            out.append({"role": m["role"], "content": m["content"]})
            continue
        parts: list[dict[str, Any]] = []
        for i, chunk in enumerate(m["content"].split(IMAGE_TOKEN)):
            if i > 0:
                parts.append({"type": "image_url", "image_url": {"url": data_url(next(images))}})
            text = chunk.strip("\n")
            if text:
                parts.append({"type": "text", "text": text})
        out.append({"role": m["role"], "content": parts})
    return out


def data_url(path: str) -> str:
    mime = mimetypes.guess_type(path)[0] or "image/png"
    with open(path, "rb") as f:
        return f"data:{mime};base64,{base64.b64encode(f.read()).decode('ascii')}"


def estimate_tokens(req: ChatRequest) -> int:
    """A rough prompt-token estimate (characters / 4) for pacing and the truncation check; images not counted."""
    return sum(len(m["content"].replace(IMAGE_TOKEN, "")) for m in req.messages) // CHARS_PER_TOKEN + 1


# ----------------------------------------------------------------------------------------------- cache


# ----------------------------------------------------------------------------------------------- client
@dataclass
class RemoteConfig:
    """Where to send requests and how politely (see the module docstring)."""

    base_url: str
    model: str
    api_key: str | None = None  # None: $OPENAI_API_KEY, else "none" (local servers ignore it)
    concurrency: int = 8
    rpm: float = 0  # requests per minute (0: no limit)
    tpm: float = 0  # tokens per minute, prompt + completion (0: no limit)
    timeout: float = 120.0  # seconds per request
    max_retries: int = 5
    backoff: float = 1.0  # first retry wait (doubles each time) when no Retry-After is given
    backoff_max: float = 60.0
    context_tokens: int | None = None  # the server's context size (Ollama's num_ctx), when known


class _Fatal(Exception):
    """An error no retry fixes (wrong key, URL or model)."""


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class RemoteClient:
    """Answers lists of ChatRequests through an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(self, cfg: RemoteConfig, cache: str | os.PathLike | None = None, *, client: Any = None):
        if cfg.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {cfg.concurrency}")
        self.cfg = cfg
        self.cache = ResponseCache(cache) if cache is not None else None
        self._client = client
        self.summary = Summary()
        self._lock = threading.Lock()

    # -- the openai client, built lazily so that importing vlmtune does not need the extra
    def openai(self) -> Any:
        if self._client is None:
            from vlmtune.extras import require

            require("remote", "the OpenAI-compatible client (teach.backend=openai)")
            import openai

            key = self.cfg.api_key or os.environ.get("OPENAI_API_KEY") or "none"
            self._client = openai.OpenAI(
                base_url=self.cfg.base_url, api_key=key, max_retries=0, timeout=self.cfg.timeout
            )
        return self._client

    def served_models(self) -> list[dict[str, Any]]:
        """What the server's `GET /v1/models` lists, one dict per model (raises what the `openai` client raises)."""
        return [m.model_dump() for m in self.openai().models.list()]

    def keys(self, requests: Sequence[ChatRequest]) -> list[str]:
        hashes: dict[str, str] = {}

        def image_hash(p: str) -> str:
            if p not in hashes:
                hashes[p] = file_sha256(p)
            return hashes[p]

        return [request_key(self.cfg.model, r, image_hash) for r in requests]

    def run(self, requests: Sequence[ChatRequest], *, desc: str = "remote") -> list[ChatResponse]:
        """One ChatResponse per request, in order (failures have `error` set). Cached keys are not sent."""
        t0 = time.monotonic()
        keys = self.keys(requests)
        todo: dict[str, ChatRequest] = {}
        found: dict[str, ChatResponse] = {}
        for k, r in zip(keys, requests):
            hit = self.cache.get(k) if self.cache else None
            if hit is not None:
                found[k] = ChatResponse(**{**asdict(hit), "cached": True})
            elif k not in todo:
                todo[k] = r
        s = self.summary = Summary(requests=len(requests), unique=len(set(keys)), cached=len(found))
        if todo:
            log.info(f"[remote] {len(todo)} to ask {self.cfg.model} at {self.cfg.base_url} ({len(found)} in the cache)")
            found.update(self._ask_all(todo, desc))
        s.seconds = time.monotonic() - t0
        log.info(f"[remote] {s.line()}")
        if s.input_truncated:
            log.warning(
                f"[remote] {s.input_truncated} response(s) report fewer prompt tokens than their input has: the "
                "server cut the input (Ollama does so silently at num_ctx). Fix: raise the context, e.g. "
                "OLLAMA_CONTEXT_LENGTH=8192 for `ollama serve`, or PARAMETER num_ctx in a Modelfile"
            )
        return [found[k] for k in keys]

    def _ask_all(self, todo: dict[str, ChatRequest], desc: str) -> dict[str, ChatResponse]:
        pacer = Pacer(self.cfg.rpm, self.cfg.tpm)
        out: dict[str, ChatResponse] = {}
        s = self.summary
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            futures = [pool.submit(self._ask_one, k, r, pacer) for k, r in todo.items()]
            bar = progress_bar(as_completed(futures), desc=desc, total=len(futures))
            try:
                for fut in bar:
                    resp = fut.result()
                    out[resp.key] = resp
                    if hasattr(bar, "set_postfix_str"):  # a tqdm bar (progress may be off)
                        mins = max(time.monotonic() - t0, 1e-6) / 60
                        bar.set_postfix_str(
                            f"{s.sent / mins:.0f} req/min, "
                            f"{(s.prompt_tokens + s.completion_tokens) / mins:.0f} tok/min, "
                            f"{s.failed} failed",
                            refresh=False,
                        )
            except _Fatal as e:
                for f in futures:
                    f.cancel()
                raise ConfigError(str(e)) from None
        return out

    def _ask_one(self, key: str, req: ChatRequest, pacer: Pacer) -> ChatResponse:
        import openai

        est = estimate_tokens(req) + int(req.params.get("max_tokens") or 0)
        attempts, t0, error, unreachable = 0, time.monotonic(), None, False
        messages = to_openai_messages(req)
        while attempts <= self.cfg.max_retries:
            if attempts:
                with self._lock:
                    self.summary.retries += 1
            attempts += 1
            reserved = pacer.acquire(est)
            wait = None
            try:
                completion = self.openai().chat.completions.create(
                    model=self.cfg.model, messages=messages, timeout=self.cfg.timeout, **req.params
                )
                resp = self._response(key, req, completion, attempts, time.monotonic() - t0)
                pacer.correct(
                    reserved,
                    (resp.prompt_tokens or 0) + (resp.completion_tokens or 0)
                    if resp.prompt_tokens is not None
                    else None,
                )
                return self._record(resp)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                pacer.correct(reserved, None)
                raise _Fatal(
                    f"{self.cfg.base_url} refused the request ({type(e).__name__}: {e}). Fix: check the "
                    "URL (it ends in /v1), the model name and the API key"
                ) from None
            except openai.APIStatusError as e:
                if e.status_code != 429 and e.status_code < 500:
                    error = f"HTTP {e.status_code}: {str(e)[:300]}"
                    break  # a bad request stays bad
                error, wait, unreachable = f"HTTP {e.status_code}: {str(e)[:200]}", _retry_after(e), False
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                error = f"{type(e).__name__}: {str(e)[:200]}"
                unreachable = type(e) is openai.APIConnectionError
            except (openai.APIResponseValidationError, ValueError, AttributeError, TypeError, KeyError) as e:
                unreachable = False
                error = f"malformed response ({type(e).__name__}: {str(e)[:200]})"
            pacer.correct(reserved, None)  # a failed attempt: the token clock keeps its estimate
            if attempts <= self.cfg.max_retries:
                if wait is None:
                    wait = min(self.cfg.backoff_max, self.cfg.backoff * 2 ** (attempts - 1)) * (
                        0.5 + random.random() / 2
                    )
                time.sleep(wait)
        pacer.correct(est, None)
        if unreachable and self.summary.ok == 0:
            raise _Fatal(
                f"cannot reach {self.cfg.base_url} ({error}). Fix: start the server (e.g. `ollama serve`, "
                "`vllm serve MODEL`) or correct the URL"
            )
        log.warning(f"[remote] request {key[:12]} failed after {attempts} attempt(s): {error}")
        return self._record(ChatResponse(key=key, error=error, attempts=attempts, seconds=time.monotonic() - t0))

    def _response(self, key: str, req: ChatRequest, completion: Any, attempts: int, seconds: float) -> ChatResponse:
        choice = completion.choices[0]
        text = choice.message.content
        if not isinstance(text, str):
            raise ValueError("the response has no message content")
        usage = getattr(completion, "usage", None)
        pt = getattr(usage, "prompt_tokens", None)
        ct = getattr(usage, "completion_tokens", None)
        truncated = pt is not None and (
            pt < TRUNCATION_RATIO * estimate_tokens(req)
            or (self.cfg.context_tokens is not None and pt >= self.cfg.context_tokens)
        )
        return ChatResponse(
            key=key,
            text=text,
            finish_reason=choice.finish_reason,
            prompt_tokens=pt,
            completion_tokens=ct,
            model=getattr(completion, "model", None),
            attempts=attempts,
            seconds=round(seconds, 3),
            input_truncated=bool(truncated),
            system_fingerprint=getattr(completion, "system_fingerprint", None),
            prompt_logprobs=prompt_logprobs_of(completion),
        )

    def _record(self, resp: ChatResponse) -> ChatResponse:
        if self.cache is not None:
            self.cache.append(resp)
        with self._lock:
            s = self.summary
            s.sent += 1
            s.ok += resp.ok
            s.failed += not resp.ok
            s.prompt_tokens += resp.prompt_tokens or 0
            s.completion_tokens += resp.completion_tokens or 0
            s.input_truncated += resp.input_truncated
        return resp


def prompt_logprobs_of(completion: Any) -> list[list[float] | None] | None:
    """vLLM's `prompt_logprobs` (asked for with `extra_body={"prompt_logprobs": 0}`) as [token id, log-prob] per
    prompt token, None for the first token (nothing precedes it); None when the server sent none.

    vLLM sends `[null, {"<id>": {"logprob", "rank", "decoded_token"}}, ...]`, the prompt token's own entry first (with
    `prompt_logprobs: k > 0` the k most likely tokens follow it)."""
    raw = getattr(completion, "prompt_logprobs", None)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError("prompt_logprobs is not a list")
    out: list[list[float] | None] = []
    for i, entry in enumerate(raw):
        if entry is None:
            if i:
                raise ValueError(f"prompt_logprobs[{i}] is null")
            out.append(None)
            continue
        token, info = next(iter(entry.items()))
        lp = info["logprob"] if isinstance(info, dict) else info
        out.append([int(token), float(lp)])
    return out


def ok_texts(responses: Iterable[ChatResponse]) -> list[str | None]:
    """The answer texts, None where a request failed."""
    return [r.text if r.ok else None for r in responses]
