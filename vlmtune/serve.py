"""An OpenAI-compatible HTTP server for one model (FastAPI + uvicorn; the `serve` extra).

    vlmtune serve tiny --adapter runs/quickstart/adapter --port 8000
    curl http://127.0.0.1:8000/v1/models

Endpoints: `POST /v1/chat/completions` (JSON, or Server-Sent Events with `"stream": true`) and
`GET /v1/models`. Images come as `image_url` parts holding a data URL (`data:image/png;base64,...`) or a
path on the server's machine; remote URLs are refused (the server fetches nothing). vLLM's extensions for
scoring are understood as vLLM defines them: `prompt_logprobs: k` returns each prompt token's log-probability
(and the k likeliest others) in the response's `prompt_logprobs`; `add_generation_prompt` and
`continue_final_message` choose how the conversation's end is rendered (`vlmtune eval --backend openai --mode
loglik` uses the three). Concurrent requests
are answered in batches by `vlmtune.infer.batcher.Engine`. With an API key set, a request without
`Authorization: Bearer KEY` gets 401. Errors use OpenAI's shape: `{"error": {"message", "type", "code"}}`.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at run time.
import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN
from vlmtune.errors import ConfigError, DataError
from vlmtune.infer.batcher import Engine
from vlmtune.infer.chat import ChatRequest, Completion
from vlmtune.infer.generate import Sampling

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A request the server refuses: HTTP status, message, and OpenAI's error code."""

    def __init__(self, status: int, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def load_image_url(url: str, where: str) -> Any:
    """A PIL image from a data URL, a file:// URL or a local path; RequestError (400) naming `where` otherwise."""
    from PIL import Image

    if url.startswith(("http://", "https://")):
        raise RequestError(
            400,
            f"{where}: remote image URLs are not fetched; send a data URL "
            "(data:image/png;base64,...) or a path on the server",
            "invalid_image",
            where,
        )
    try:
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if ";base64" not in header:
                raise ValueError("only base64 data URLs are read")
            raw = io.BytesIO(base64.b64decode(payload, validate=True))
        else:
            path = Path(url[len("file://") :] if url.startswith("file://") else url).expanduser()
            if not path.is_file():
                raise RequestError(400, f"{where}: no image file at {path} on the server", "invalid_image", where)
            raw = io.BytesIO(path.read_bytes())
        with Image.open(raw) as im:
            return im.convert("RGB")
    except RequestError:
        raise
    except (ValueError, binascii.Error, OSError) as e:
        raise RequestError(
            400, f"{where}: not a readable image ({type(e).__name__}: {e})", "invalid_image", where
        ) from None


def parse_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, str]], list[Any]]:
    """OpenAI chat messages -> vlmtune's messages (an `<image>` placeholder per image) and the images, in order."""
    if not messages:
        raise RequestError(400, "messages: at least one message is needed", param="messages")
    out, images = [], []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise RequestError(
                400, f"messages[{i}].role: {role!r} is not one of system, user, assistant", param=f"messages[{i}].role"
            )
        if isinstance(content, str):
            parts: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = content
        else:
            raise RequestError(
                400, f"messages[{i}].content must be a string or a list of parts", param=f"messages[{i}].content"
            )
        text = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                if IMAGE_TOKEN in part["text"]:
                    raise RequestError(
                        400, f"{where}: text may not contain {IMAGE_TOKEN}; send images as image_url parts", param=where
                    )
                text.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise RequestError(400, f"{where}: image_url needs a url", param=where)
                images.append(load_image_url(url, where))
                text.append(IMAGE_TOKEN)
            else:
                raise RequestError(
                    400, f"{where}: unsupported part {kind!r} (text and image_url are read)", param=where
                )
        if role == "assistant" and IMAGE_TOKEN in text:
            raise RequestError(400, f"messages[{i}]: images belong in user messages", param=f"messages[{i}]")
        out.append({"role": role, "content": "\n".join(text)})
    return out, images


def to_chat_request(body: dict[str, Any], *, model_id: str, default_max_tokens: int) -> ChatRequest:
    """A validated ChatRequest from a /v1/chat/completions body (RequestError for what is wrong)."""
    if body.get("model") != model_id:
        raise RequestError(
            404,
            f"model {body.get('model')!r} is not served here; this server serves {model_id!r} (GET /v1/models)",
            "model_not_found",
            "model",
        )
    if body.get("n", 1) != 1:
        raise RequestError(400, "n: only n=1 is supported", param="n")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    temperature = body.get("temperature")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}", param="max_tokens")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    sampling = Sampling(
        temperature=float(temperature or 0.0),
        top_p=float(body.get("top_p") or 1.0),
        top_k=int(body.get("top_k") or 0),
        seed=body.get("seed"),
    )
    messages, images = parse_messages(body.get("messages") or [])
    asked = bool(body.get("max_completion_tokens") or body.get("max_tokens"))
    switches = {k: body.get(k, d) for k, d in (("add_generation_prompt", True), ("continue_final_message", False))}
    for k, v in switches.items():
        if not isinstance(v, bool):
            raise RequestError(400, f"{k} must be true or false, got {v!r}", param=k)
    if switches["add_generation_prompt"] and switches["continue_final_message"]:
        raise RequestError(
            400,
            "continue_final_message continues the last message; set add_generation_prompt to false with it",
            param="continue_final_message",
        )
    logprobs = body.get("prompt_logprobs")
    if logprobs is not None and (
        not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 20
    ):
        raise RequestError(
            400, f"prompt_logprobs must be an integer from 0 to 20, got {logprobs!r}", param="prompt_logprobs"
        )
    return ChatRequest(
        messages,
        images,
        max_new_tokens=max_tokens,
        sampling=sampling,
        stop=stop,
        fit_to_context=not asked,
        add_generation_prompt=switches["add_generation_prompt"],
        continue_final=switches["continue_final_message"],
        prompt_logprobs=logprobs,
    )


def _error(status: int, message: str, code: str, param: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind, "param": param, "code": code}}
    )


def create_app(engine: Engine, model_id: str, *, api_key: str | None = None, default_max_tokens: int = 256) -> Any:
    """The FastAPI app answering with `engine`'s model under the name `model_id`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI(title="vlmtune serve", version=__import__("vlmtune").__version__)
    created = int(time.time())

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(
                    401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'", "invalid_api_key"
                )
        return await call_next(request)

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "vlmtune"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            req = await asyncio.to_thread(
                to_chat_request, body, model_id=model_id, default_max_tokens=default_max_tokens
            )
        except RequestError as e:
            return _error(e.status, e.message, e.code, e.param)
        except ValueError as e:
            return _error(400, f"the body is not valid JSON ({e})", "invalid_json")
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        stream = bool(body.get("stream"))

        def on_text(delta: str) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

        job = engine.submit(req, on_text if stream else None)
        try:
            await asyncio.wrap_future(job.accepted)
        except DataError as e:
            return _error(400, str(e), "invalid_request")
        rid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not stream:
            done: Completion = await asyncio.wrap_future(job.done)
            reply = {
                "id": rid,
                "object": "chat.completion",
                "created": now,
                "model": model_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text},
                        "finish_reason": done.finish_reason,
                    }
                ],
                "usage": _usage(done),
            }
            if done.prompt_logprobs is not None:
                reply["prompt_logprobs"] = done.prompt_logprobs
            return reply
        job.done.add_done_callback(lambda _: loop.call_soon_threadsafe(deltas.put_nowait, None))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_sse(rid, now, model_id, job, deltas, include_usage), media_type="text/event-stream")

    return app


def _usage(done: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


async def _sse(rid: str, now: int, model_id: str, job: Any, deltas: Any, include_usage: bool):
    """The chunks of a streamed completion, as OpenAI sends them, ending with `data: [DONE]`."""

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": now,
            "model": model_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
            "usage": usage,
        }
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    while (delta := await deltas.get()) is not None:
        yield chunk({"content": delta})
    try:
        done: Completion = job.done.result()
    except Exception as e:  # the batch failed after the stream began: say so in the stream
        yield f"data: {json.dumps({'error': {'message': f'generation failed: {e}', 'type': 'server_error'}})}\n\n"
        return
    yield chunk({}, done.finish_reason)
    if include_usage:
        yield chunk({}, usage=_usage(done))
    yield "data: [DONE]\n\n"


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose a model beyond this machine without a key."""
    if host not in LOOPBACK and not api_key:
        raise ConfigError(
            f"--host {host} makes the server reachable from other machines; set --api-key KEY "
            "(or VLMTUNE_API_KEY) too, or keep the default --host 127.0.0.1"
        )


def run_server(
    engine: Engine, model_id: str, *, host: str, port: int, api_key: str | None, default_max_tokens: int
) -> None:
    """Serve until interrupted (uvicorn), then stop the engine."""
    from vlmtune.extras import require

    require("serve", "vlmtune serve")
    import uvicorn

    check_bind(host, api_key)
    app = create_app(engine, model_id, api_key=api_key, default_max_tokens=default_max_tokens)
    log.info(
        f"[serve] {model_id} at http://{host}:{port}/v1 (batches of up to {engine.max_batch}"
        f"{'; API key required' if api_key else ''})"
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.close()
