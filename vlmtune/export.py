"""`vlmtune export`: a run's adapter, or its merged model, as a directory that appears whole or not at all.

    out = export_model("runs/q", "exports/q-merged", merge=True)
    push_to_hub(out, "me/llava-count", private=True)      # vlmtune.models.merge

The source is a run directory (its adapter/ or model/, the base model from its config.yaml), an adapter
directory, or a model directory. The export carries a model card (README.md, with the hub's `base_model`
front matter) and export.json (where it came from, content hashes of the base, adapter and result).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vlmtune.build import resolve_model
from vlmtune.config import load_config
from vlmtune.data.example import atomic_write_json
from vlmtune.errors import ConfigError
from vlmtune.models.load import dir_hash
from vlmtune.models.merge import merge_adapter, model_card

log = logging.getLogger(__name__)


@dataclass
class ExportSource:
    kind: str  # "adapter" (a PEFT adapter), "model" (a full fine-tune) or "connector" (a memory connector)
    weights: Path  # the adapter or model directory
    base: str | None  # the base model the adapter belongs to (None for a full model)
    run_dir: Path | None  # the run it came from, when there is one


def find_export_source(source: str | Path, base: str | None = None) -> ExportSource:
    """A run directory (runs/<name>: its adapter/ or model/, the base from its config.yaml), an adapter
    directory (the base from --base, its run's config.yaml, or adapter_config.json), or a model directory."""
    src = Path(source)
    if not src.is_dir():
        raise ConfigError(
            f"export: {src} is not a directory. Fix: give a run directory (runs/<name>), an adapter "
            "directory (runs/<name>/adapter) or a model directory"
        )
    run_dir = None
    conn = src if (src / "connector.json").exists() else src / "connector"
    if (conn / "connector.json").exists():  # a memory connector (vlmtune.models.connector): its LM is in connector.json
        meta = json.loads((conn / "connector.json").read_text(encoding="utf-8"))
        return ExportSource(
            "connector",
            conn,
            base or meta["lm"]["name"],
            conn.parent if (conn.parent / "config.yaml").exists() else None,
        )
    if (src / "adapter_config.json").exists():
        weights = src
        run_dir = src.parent if (src.parent / "config.yaml").exists() else None
    elif (src / "config.yaml").exists() and (
        (src / "adapter" / "adapter_config.json").exists() or (src / "model" / "config.json").exists()
    ):
        run_dir = src
        weights = src / "adapter" if (src / "adapter" / "adapter_config.json").exists() else src / "model"
    elif (src / "config.json").exists():
        return ExportSource("model", src, None, None)
    elif (src / "config.yaml").exists():
        raise ConfigError(
            f"export: run {src} has no trained weights yet (no adapter/adapter_config.json or "
            "model/config.json); train it first (`vlmtune run` or `vlmtune train`)"
        )
    else:
        raise ConfigError(
            f"export: {src} holds no adapter_config.json, config.json or run config.yaml. Fix: give a "
            "run directory (runs/<name>), an adapter directory or a model directory"
        )
    if weights.name == "model" and not (weights / "adapter_config.json").exists():
        return ExportSource("model", weights, None, run_dir)
    if base is None and run_dir is not None:
        cfg = load_config(run_dir / "config.yaml", [])
        base = resolve_model(cfg.model).path  # 'tiny' and 'gemma3-270m' -> their cached directories
    if base is None:
        base = json.loads((weights / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(
            f"export: cannot tell the base model of adapter {weights}; pass --base MODEL "
            "(the hub id or directory it was trained on)"
        )
    return ExportSource("adapter", weights, str(base), run_dir)


def connector_card(found: ExportSource, source: str | Path) -> str:
    """README.md of an exported memory connector: what it is, the LM and encoders it belongs to, how to load it."""
    meta = json.loads((found.weights / "connector.json").read_text(encoding="utf-8"))
    enc = meta["encoders"]
    return "\n".join(
        [
            "---",
            "library_name: vlmtune",
            "tags: [vlmtune, memory-connector]",
            "---",
            "",
            "# Memory connector",
            "",
            "Stored embeddings of memory items (image, text, turn position) -> soft prompt tokens of a frozen LM. "
            "Made with vlmtune.",
            "",
            f"- exported from: `{source}`",
            f"- LM: `{meta['lm']['name']}` (content hash {meta['lm']['hash']})",
            f"- image encoder: `{meta['specs']['image']}` ({enc['image'].get('name')}, {enc['image'].get('dim')}-d)",
            f"- text encoder: `{meta['specs']['text']}` ({enc['text'].get('name')}, {enc['text'].get('dim')}-d)",
            f"- settings: {json.dumps(meta['config'], sort_keys=True)}",
            "",
            "Load it with `vlmtune eval --model LM --adapter DIR --data TEST.jsonl`; the LM and the encoders must be the "
            "ones named above (anything else is refused).",
            "",
        ]
    )


def is_pickle(path: Path) -> bool:
    """A Python pickle (protocol 2+), or torch.save's zip of one: files that run code when loaded."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.endswith(".pkl") for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def refuse_pickles(folder: Path, source: Path) -> None:
    """An export (and so a hub upload) carries no pickle: weights are safetensors, settings JSON."""
    found = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file() and is_pickle(p)]
    if found:
        raise ConfigError(
            f"export: {source} holds pickled files ({', '.join(found)}), which run code when loaded "
            "and are never exported. Fix: save the weights as safetensors (save_pretrained's default) "
            "and remove the pickles"
        )


def export_model(
    source: str | Path, out: str | Path, *, base: str | None = None, merge: bool = False, overwrite: bool = False
) -> Path:
    """Write a run's adapter (or, with merge=True, the merged model) to `out`, with a model card and export.json.

    The directory appears whole or not at all: it is built beside `out` and renamed into place."""
    import vlmtune

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"export: {out} already exists; pass --overwrite to replace it, or choose another --out")
    found = find_export_source(source, base)
    if merge and found.kind == "connector":
        raise ConfigError(
            "export --merge: a memory connector has no weights to fold into its LM (its soft tokens come "
            "from stored embeddings at run time). Fix: export it without --merge"
        )
    if merge and found.kind != "adapter":
        log.info(f"[export] {found.weights} is a full model: nothing to merge, exporting it as it is")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        if found.kind == "adapter" and merge:
            assert found.base is not None  # find_export_source gives every adapter its base
            merge_adapter(found.base, found.weights, tmp, source=source)  # writes the card too
            kind = "merged"
        else:
            # training_args.bin is the Trainer's pickle of its arguments (older runs kept it in adapter/)
            shutil.copytree(
                found.weights, tmp, ignore=shutil.ignore_patterns("checkpoint-*", ".*", "training_args.bin")
            )
            kind = found.kind
            (tmp / "README.md").write_text(
                connector_card(found, source)
                if kind == "connector"
                else model_card(kind, found.base, found.weights if kind == "adapter" else None, source=source)
            )
        refuse_pickles(tmp, found.weights)
        atomic_write_json(
            tmp / "export.json",
            {
                "kind": kind,
                "source": str(source),
                "run_dir": str(found.run_dir) if found.run_dir else None,
                "base": found.base,
                "base_hash": dir_hash(found.base) if found.base else None,
                "weights": str(found.weights),
                "weights_hash": dir_hash(found.weights),
                "hash": dir_hash(tmp),
                "vlmtune": vlmtune.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info(f"[export] {kind} -> {out}")
    return out
