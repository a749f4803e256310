"""Fold a LoRA adapter into its base model, write a model card, and publish a model directory.

    out = merge_adapter("llava-hf/llava-1.5-7b-hf", "runs/q/adapter", "runs/q/merged")
    push_to_hub(out, "me/llava-count", private=True)

`vlmtune.export` (what `vlmtune export` runs) finds a run's weights and base and uses these.

The merged directory is an ordinary `save_pretrained` model + processor: it loads with the Auto
classes (or `load_model(ModelConfig(name=...))`) and needs no PEFT at inference. An exported adapter
is the PEFT adapter + processor; either carries a model card (README.md, with the hub's `base_model`
front matter) and export.json (where it came from, content hashes of the base, adapter and result).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vlmtune.config import ModelConfig
from vlmtune.errors import ConfigError, VlmtuneError

log = logging.getLogger(__name__)


def merge_adapter(
    base: str | Path, adapter_dir: str | Path, out_dir: str | Path, *, source: str | Path | None = None
) -> Path:
    """Load `base` in full precision with the adapter, merge_and_unload, save model + processor + README.md."""
    from vlmtune.models.load import load_model

    adapter = Path(adapter_dir)
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.exists():
        raise ConfigError(
            f"adapter {adapter}: no adapter_config.json there (expected a PEFT adapter dir, e.g. runs/<name>/adapter)"
        )
    # Merging into 4-bit weights would round the LoRA delta away; the base is loaded unquantised.
    model, processor = load_model(ModelConfig(name=str(base), load_in_4bit=False), adapter=adapter)
    merged = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(
        model_card("merged", base, adapter, architecture=type(merged).__name__, source=source)
    )
    log.info(f"[merge] {adapter} merged into {base} -> {out}")
    return out


def model_card(
    kind: str,
    base: str | Path | None,
    adapter: str | Path | None,
    *,
    architecture: str | None = None,
    source: str | Path | None = None,
) -> str:
    """README.md for an exported directory; the front matter is what the hub reads (base model, library)."""
    from vlmtune.models.load import dir_hash

    hub_base = str(base) if base is not None and not Path(base).exists() else None  # a hub id, not a local dir
    front = ["---", f"library_name: {'peft' if kind == 'adapter' else 'transformers'}", "tags: [vlmtune]"]
    if hub_base:
        front.append(f"base_model: {hub_base}")
    front.append("---")
    what = {
        "adapter": "a LoRA adapter (PEFT); load it on top of its base model",
        "merged": "a base model with a LoRA adapter folded into its weights (`peft` `merge_and_unload`); "
        "it loads without PEFT",
        "model": "a fully fine-tuned model",
    }[kind]
    lines = [
        *front,
        "",
        f"# {'Merged model' if kind == 'merged' else 'Adapter' if kind == 'adapter' else 'Model'}",
        "",
        f"This directory is {what}. Made with vlmtune.",
        "",
    ]
    if source is not None:
        lines.append(f"- exported from: `{source}`")
    if base is not None:
        lines.append(f"- base model: `{base}` (content hash {dir_hash(base)})")
    if adapter is not None:
        acfg_file = Path(adapter) / "adapter_config.json"
        acfg = json.loads(acfg_file.read_text()) if acfg_file.exists() else {}
        targets = acfg.get("target_modules") or []
        n_targets = len(targets) if isinstance(targets, list) else targets
        lines.append(f"- adapter: `{adapter}` (content hash {dir_hash(adapter)})")
        lines.append(f"- LoRA: r={acfg.get('r')}, alpha={acfg.get('lora_alpha')}, {n_targets} target modules")
    if architecture:
        lines.append(f"- architecture: `{architecture}`")
    if kind == "adapter":
        lines += [
            "",
            "Load it with `vlmtune eval --model BASE --adapter DIR ...`, or with "
            "`peft.PeftModel.from_pretrained(base_model, DIR)`.",
        ]
    return "\n".join(lines) + "\n"


def check_repo_id(repo_id: str) -> None:
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or any(c.isspace() for c in repo_id):
        raise ConfigError(f"push_to_hub: '{repo_id}' is not a hub repo id; write it as OWNER/NAME, e.g. me/llava-count")


def push_to_hub(path: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload a model directory (merged model or adapter) to the Hugging Face Hub; returns the repo URL.

    The token defaults to the one `huggingface-cli login` stored (or $HF_TOKEN).
    """
    from huggingface_hub import HfApi

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"push_to_hub: {p} is not a directory (give a merged model or adapter directory)")
    check_repo_id(repo_id)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, private=private, repo_type="model", exist_ok=True)
        api.upload_folder(
            folder_path=str(p), repo_id=repo_id, repo_type="model", commit_message=f"Upload {p.name} with vlmtune"
        )
    except Exception as e:  # no token, no network, no permission: the local export is intact either way
        raise VlmtuneError(
            f"push_to_hub: uploading {p} to {repo_id} failed ({type(e).__name__}: {e}). Log in with "
            "`hf auth login` (or set HF_TOKEN) and check the network; the directory is unchanged, "
            f"so you can retry with `hf upload {repo_id} {p} --repo-type model"
            f"{' --private' if private else ''}`"
        ) from e
    return str(url)
