"""Verbs that talk to a model: chat (terminal), serve (OpenAI-compatible HTTP), ui (web app)."""

from __future__ import annotations

import argparse
import json
import os

from vlmtune.cli.common import Verb, model_config
from vlmtune.errors import ConfigError, DataError

CHAT_HELP = """commands: /image PATH  attach an image to your next message
          /reset       start a new conversation
          /save FILE   write the conversation as a vlmtune JSONL record
          /help        this list
          /quit        leave (or Ctrl-D)"""


def _load(a: argparse.Namespace):
    from vlmtune.build import resolve_model
    from vlmtune.models.load import load_model

    return load_model(resolve_model(model_config(a)), adapter=a.adapter)


def _sampling(a: argparse.Namespace):
    from vlmtune.infer.generate import Sampling

    return Sampling(temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed)


def cmd_chat(a: argparse.Namespace) -> int:
    """Talk to a model in the terminal: multi-turn, with images; greedy unless --temperature > 0.

    Example: vlmtune chat tiny --adapter runs/quickstart/adapter
             you> /image runs/quickstart/data/source/images/count-000000.png
             you> How many red shapes are there?
    """
    from vlmtune.data.example import atomic_write_text
    from vlmtune.infer.chat import Conversation, check_request, complete
    from vlmtune.processing import has_image_processor

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    model, processor = _load(a)
    sampling, conv = _sampling(a), Conversation()
    print(
        f"vlmtune chat: {a.model}{' + ' + a.adapter if a.adapter else ''} "
        f"({'greedy' if sampling.greedy else f'sampling, temperature {sampling.temperature}'}). /help for commands."
    )
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            if not line:
                continue
            elif cmd in ("/quit", "/exit"):
                return 0
            elif cmd == "/help":
                print(CHAT_HELP)
            elif cmd == "/reset":
                conv.reset()
                print("[new conversation]")
            elif cmd == "/image":
                if not arg:
                    raise DataError("/image needs a path, e.g. /image photo.png")
                if not has_image_processor(processor):
                    raise DataError(f"{a.model} reads text only; it cannot take images")
                conv.attach(arg)
                print(f"[image attached: {arg}; it goes with your next message]")
            elif cmd == "/save":
                if not arg:
                    raise DataError("/save needs a file name, e.g. /save chat.jsonl")
                atomic_write_text(arg, json.dumps(conv.record(), ensure_ascii=False) + "\n")
                print(f"[saved {len(conv.messages)} messages to {arg}]")
            elif line.startswith("/"):
                print(f"unknown command {cmd}\n{CHAT_HELP}")
            else:
                req = conv.ask(line, max_new_tokens=a.max_new_tokens, sampling=sampling)
                check_request(model, processor, req)
                print("model> ", end="", flush=True)
                try:
                    [done] = complete(model, processor, [req], [lambda d: print(d, end="", flush=True)])
                except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat; the turn is not kept
                    print("\n[interrupted]")
                    continue
                print("\n[answer cut at --max-new-tokens]" if done.finish_reason == "length" else "")
                conv.answered(req, done.text)
        except DataError as e:
            print(f"error: {e}")


def cmd_serve(a: argparse.Namespace) -> int:
    """Serve a model over HTTP with OpenAI's chat completions API (streaming, images, batching).

    Example: vlmtune serve tiny --adapter runs/quickstart/adapter --port 8000
             curl http://127.0.0.1:8000/v1/models
    """
    from vlmtune.extras import require
    from vlmtune.infer.batcher import Engine
    from vlmtune.serve import check_bind, run_server

    require("serve", "vlmtune serve")
    api_key = a.api_key or os.environ.get("VLMTUNE_API_KEY") or None
    check_bind(a.host, api_key)
    model, processor = _load(a)
    engine = Engine(model, processor, max_batch=a.max_batch)
    run_server(
        engine, a.name or a.model, host=a.host, port=a.port, api_key=api_key, default_max_tokens=a.max_new_tokens
    )
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    """Open the web app over runs/: chat with a model (image upload), each run's metrics, report and every
    prediction, and a comparison of two evaluations.

    Example: vlmtune ui --runs runs --port 7860      # then open http://127.0.0.1:7860
    """
    from vlmtune.extras import require
    from vlmtune.ui import launch

    require("ui", "vlmtune ui")
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"--host {a.host} would let other machines use the app, which has no login; keep the "
            "default 127.0.0.1 (reach it over an SSH tunnel: ssh -L 7860:127.0.0.1:7860 HOST)"
        )
    launch(a.runs, host=a.host, port=a.port)
    return 0


def model_positional(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("model", help="'tiny', 'gemma3-270m', a local directory, or a hub id")
    p.add_argument("--adapter", help="a PEFT adapter directory, e.g. runs/quickstart/adapter")
    p.add_argument("--load-in-4bit", action="store_true", help="load the base in 4-bit nf4 (bitsandbytes)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        help=f"longest answer in tokens (default: {max_new_tokens})",
    )


def add_verbs(verb: Verb) -> None:
    p = verb("chat", cmd_chat, "talk to a model in the terminal")
    model_positional(p, 128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sample")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)")
    p.add_argument("--seed", type=int, help="seed for sampling (repeatable answers)")
    p = verb("serve", cmd_serve, "serve a model with an OpenAI-compatible HTTP API")
    model_positional(p, 256)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set VLMTUNE_API_KEY)")
    p.add_argument("--name", help="the model id clients send (default: MODEL as given)")
    p.add_argument("--max-batch", type=int, default=16, help="most requests answered by one generate call")
    p = verb("ui", cmd_ui, "a web app: chat, runs, comparisons")
    p.add_argument("--runs", default="runs", help="the directory of runs to show (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only: the app has no login)")
    p.add_argument("--port", type=int, default=7860)
