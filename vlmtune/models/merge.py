"""Fold a LoRA adapter into its base model and publish the result.

    out = merge_adapter("llava-hf/llava-1.5-7b-hf", "runs/q/adapter", "runs/q/merged")
    push_to_hub(out, "me/llava-count", private=True)

The merged directory is an ordinary `save_pretrained` model + processor: it loads with the Auto
classes (or `load_model(ModelConfig(name=...))`) and needs no PEFT at inference.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmtune.config import ModelConfig
from vlmtune.errors import ConfigError


def merge_adapter(base: str | Path, adapter_dir: str | Path, out_dir: str | Path, *, log=print) -> Path:
    """Load `base` in full precision with the adapter, merge_and_unload, save model + processor + README.md."""
    from vlmtune.models.load import dir_hash, load_model

    adapter = Path(adapter_dir)
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.exists():
        raise ConfigError(f"adapter {adapter}: no adapter_config.json there (expected a PEFT adapter dir, "
                          "e.g. runs/<name>/adapter)")
    # Merging into 4-bit weights would round the LoRA delta away; the base is loaded unquantised.
    model, processor = load_model(ModelConfig(name=str(base), load_in_4bit=False), adapter=str(adapter), log=log)
    merged = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    processor.save_pretrained(out)
    acfg = json.loads(cfg_file.read_text())
    targets = acfg.get("target_modules") or []
    n_targets = len(targets) if isinstance(targets, list) else targets
    (out / "README.md").write_text(
        "# Merged model\n\n"
        "This directory is a base model with a LoRA adapter folded into its weights "
        "(`peft` `merge_and_unload`, by `vlmtune.models.merge.merge_adapter`). It loads without PEFT.\n\n"
        f"- base model: `{base}` (content hash {dir_hash(base)})\n"
        f"- adapter: `{adapter}` (content hash {dir_hash(adapter)})\n"
        f"- LoRA: r={acfg.get('r')}, alpha={acfg.get('lora_alpha')}, {n_targets} target modules\n"
        f"- architecture: `{type(merged).__name__}`\n")
    log(f"[merge] {adapter} merged into {base} -> {out}")
    return out


def push_to_hub(path: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload a model directory (merged model or adapter) to the Hugging Face Hub; returns the repo URL.

    The token defaults to the one `huggingface-cli login` stored (or $HF_TOKEN).
    """
    from huggingface_hub import HfApi

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"push_to_hub: {p} is not a directory (give a merged model or adapter directory)")
    api = HfApi(token=token)
    url = api.create_repo(repo_id=repo_id, private=private, repo_type="model", exist_ok=True)
    api.upload_folder(folder_path=str(p), repo_id=repo_id, repo_type="model",
                      commit_message=f"Upload {p.name} with vlmtune")
    return str(url)
