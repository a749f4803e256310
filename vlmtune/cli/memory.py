"""The memory verb: embed (pre-extraction), tune (score weights on a dev split), build (LoCoMo, VisDial chains)."""

from __future__ import annotations

import argparse
import json

from vlmtune.cli.common import Verb
from vlmtune.errors import ConfigError


def _toolkit(a: argparse.Namespace, *, need_model: bool):
    """The encoders the options name, with the VLM loaded when the image encoder or captions need it."""
    from vlmtune.memory.toolkit import Toolkit

    model = processor = model_hash = None
    if need_model:
        from vlmtune.build import resolve_model
        from vlmtune.config import ModelConfig
        from vlmtune.models.load import dir_hash, load_model

        ref = resolve_model(ModelConfig(name=a.model))
        model, processor = load_model(ref)
        model_hash = dir_hash(ref.path)
    kit = Toolkit.build(
        a.text_encoder,
        a.image_encoder,
        caption=not a.no_captions,
        model=model,
        processor=processor,
        model_hash=model_hash,
    )
    return kit, processor, model


def cmd_memory(a: argparse.Namespace) -> int:
    """Memory tools: embed a dataset's turns and images once (resumable, cached by content hash), tune the score
    on a dev split, build episodes from LoCoMo or chained VisDial dialogues.

    Example: vlmtune memory embed data/shapes-memory/episodes.jsonl --model tiny
             vlmtune memory embed runs/shapes-dialog-connector/data/train.jsonl --connector --no-captions
             vlmtune memory tune runs/shapes-memory/data/val.jsonl --episodes runs/shapes-memory/data/source/episodes.jsonl
             vlmtune memory build --from locomo locomo10.json --out data/locomo
             vlmtune memory build --from visdial-chain visdial_1.0_val.json --out data/visdial-chain --chain 5 --image-dir VisualDialog_val2018
    """
    if a.memory_cmd == "build":
        from vlmtune.memory.sources import build_visdial_chain, convert_locomo

        if a.source == "locomo":
            path = convert_locomo(a.path, a.out, image_dir=a.image_dir)
        else:
            path = build_visdial_chain(
                a.path,
                a.out,
                image_dirs=[a.image_dir] if a.image_dir else None,
                chain=a.chain,
                seed=a.seed,
                dense=a.dense,
                limit=a.limit,
            )
        n = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        print(f"[memory] {n} probes -> {path}; episodes -> {path.parent / 'episodes.jsonl'}")
        return 0
    need_model = a.image_encoder == "vision_tower" or not a.no_captions
    kit, processor, _ = _toolkit(a, need_model=need_model)
    if a.memory_cmd == "embed":
        from vlmtune.memory.embed import embed_dataset

        stats = embed_dataset(a.data, kit, connector=a.connector)
        print(json.dumps({"file": a.data, **stats.__dict__, "encoders": kit.identities()}, indent=2))
        return 0
    from vlmtune.config import MemoryConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.memory.episodes import RunnerSettings, read_episodes
    from vlmtune.memory.reminder import TokenCounter
    from vlmtune.memory.tune import as_recipe, tune

    if not a.episodes:
        raise ConfigError("memory tune needs --episodes FILE (the episodes the dev probes belong to)")
    base = RunnerSettings.from_config(MemoryConfig(), window=448)
    ranked = tune(read_episodes(a.episodes), load_jsonl(a.data), kit, TokenCounter(processor), base)
    for s, m in ranked[: a.top]:
        print(json.dumps({"mrr": round(m["mrr"], 4), "recall@5": round(m["recall@5"], 4), "memory": as_recipe(s)}))
    return 0


def add_verbs(verb: Verb) -> None:
    p = verb("memory", cmd_memory, "long-horizon memory: pre-extract embeddings, tune the score, build episodes")
    sub = p.add_subparsers(dest="memory_cmd", required=True, metavar="CMD")
    for name, help in (
        ("embed", "cache a dataset's embeddings and key captions (resumable, content-hashed)"),
        ("tune", "grid-search the score's weights and decay on dev probes (retrieval MRR)"),
    ):
        s = sub.add_parser(name, help=help)
        s.add_argument(
            "data",
            help="an episodes.jsonl or a data JSONL file"
            if name == "embed"
            else "dev probes (JSONL, each with meta.episode)",
        )
        if name == "tune":
            s.add_argument("--episodes", help="the episodes file the probes belong to")
            s.add_argument("--top", type=int, default=5, help="settings printed, best first")
        s.add_argument("--model", default="tiny", help="the VLM whose vision tower and captions are used")
        s.add_argument(
            "--text-encoder", default="minilm", help="minilm | bm25 | clip:PATH | siglip:PATH | precomputed:DIR"
        )
        s.add_argument(
            "--image-encoder",
            default="vision_tower",
            help="vision_tower | none | clip:PATH | siglip:PATH | precomputed:DIR",
        )
        s.add_argument("--no-captions", action="store_true", help="no key expansion by the VLM's captions")
        if name == "embed":
            s.add_argument(
                "--connector",
                action="store_true",
                help="a memory connector's items (each turn's text with "
                "its answer, and the image) instead of the user messages",
            )
        s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s = sub.add_parser("build", help="episodes + probes from LoCoMo or chained VisDial dialogues")
    s.add_argument("--from", dest="source", required=True, choices=["locomo", "visdial-chain"])
    s.add_argument("path", help="locomo10.json, or a VisDial v1.0 dialog file")
    s.add_argument("--out", required=True, help="folder for episodes.jsonl and data.jsonl")
    s.add_argument("--image-dir", help="LoCoMo: downloaded shared photos (by URL file name); VisDial: the image folder")
    s.add_argument("--chain", type=int, default=5, help="visdial-chain: dialogues per episode")
    s.add_argument("--dense", help="visdial-chain: dense annotations file")
    s.add_argument("--limit", type=int, default=0, help="visdial-chain: read at most this many dialogues (0: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
