"""Load any HF model + processor through the Auto classes; 4-bit / 8-bit; LoRA targets; content hashes.

    ref = resolve_model(ModelConfig(name="tiny"))            # vlmtune.build: 'tiny' is built once, then cached
    model, processor = load_model(ref)
    model, processor = load_model(ModelConfig(name="llava-hf/llava-1.5-7b-hf", load_in_4bit=True))

A `ModelRef` is a model the user named, resolved once to what `from_pretrained` loads. Names that need
building first ('tiny', 'gemma3-270m', a .gguf file) are resolved by `vlmtune.build.resolve_model`; a
directory or hub id needs nothing, so `load_model` also takes a plain `ModelConfig` naming one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from vlmtune.config import ModelConfig
from vlmtune.errors import ConfigError
from vlmtune.processing import Model, Processor, tokenizer_of

log = logging.getLogger(__name__)

_LINEAR_CLASSES = ("Linear", "Linear4bit", "Linear8bitLt")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj", "fc1", "fc2", "linear_1", "linear_2")
# Module names of the parts of a VLM across families (LLaVA, LLaVA-NeXT, Gemma-3, Qwen2.5-VL, Idefics3).
# A projector may sit inside the vision tower (Qwen2.5-VL's visual.merger): the projector names win.
VISION_TOWERS = ("vision_tower", "vision_model", "visual")
PROJECTORS = ("multi_modal_projector", "merger", "connector")
# Kept in full precision when quantizing, and targeted by LoRA only when asked.
VISION_PARTS = VISION_TOWERS + PROJECTORS
# Names that need building or converting before from_pretrained can load them (vlmtune.build.resolve_model).
NEEDS_RESOLVING = ("tiny",)


def module_part(name: str) -> str:
    """'projector', 'vision' or 'language': which part of a VLM the module `name` belongs to."""
    parts = name.split(".")
    if any(p in PROJECTORS for p in parts):
        return "projector"
    if any(p in VISION_TOWERS for p in parts):
        return "vision"
    return "language"


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it (`name`), resolved to what `from_pretrained` loads (`path`)."""

    name: str
    path: str
    cfg: ModelConfig

    @classmethod
    def of(cls, cfg: ModelConfig) -> ModelRef:
        """A ModelRef for a directory or hub id, which need no resolving."""
        from vlmtune.models.gguf import is_gguf_name

        if cfg.name in NEEDS_RESOLVING or is_gguf_name(cfg.name):
            raise ConfigError(
                f"model '{cfg.name}' must be built or converted before loading; call "
                "vlmtune.build.resolve_model(cfg) (the CLI and the pipeline do)"
            )
        return cls(cfg.name, cfg.name, cfg)

    def at(self, path: str | Path) -> ModelRef:
        """The same settings, loading other weights (a full fine-tune's model/ directory)."""
        return ModelRef(self.name, str(path), self.cfg)

    def unquantized(self) -> ModelRef:
        return ModelRef(self.name, self.path, dataclasses.replace(self.cfg, load_in_4bit=False, load_in_8bit=False))


def pick_device(requested: str = "auto") -> tuple[str, str]:
    """Return (device, reason)."""
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ConfigError("model.device=cuda but no CUDA GPU is visible; use model.device=auto or cpu")
        return requested, "set by model.device"
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))  # one GPU per process under a launcher
        return f"cuda:{local}" if local else "cuda", f"CUDA GPU found ({torch.cuda.get_device_name(local)})"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps", "Apple GPU (MPS) found"
    return "cpu", "no GPU found"


def pick_dtype(requested: str, device: str):
    import torch

    if requested != "auto":
        return getattr(torch, requested), "set by model.dtype"
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16, "GPU supports bf16"
    return torch.float32, f"fp32 on {device}"


def is_vision_model(path_or_id: str) -> bool:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path_or_id)
    return hasattr(cfg, "vision_config") and cfg.vision_config is not None


def load_processor(ref: ModelRef) -> tuple[Processor, bool]:
    """(processor, is a vision model) of a resolved model, without its weights. For text-only models the
    processor is the tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        vision = is_vision_model(ref.path)
    except OSError as e:
        raise ConfigError(
            f"cannot load model '{ref.path}': {e}. Give a local directory, 'tiny', or a hub id "
            "(hub ids need network access or a populated HF cache)"
        ) from None
    processor = (AutoProcessor if vision else AutoTokenizer).from_pretrained(ref.path)
    tok = tokenizer_of(processor)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # generation and batching need a pad id; eos is the usual choice
    return processor, vision


def check_loadable(ref: ModelRef) -> None:
    """ConfigError unless the model's config can be read (a missing directory, a typo in a hub id, no network):
    cheap, so a run checks it before it replaces anything."""
    try:
        is_vision_model(ref.path)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load model '{ref.name}': {str(e).splitlines()[0]}. Fix: give a local directory "
            "saved with save_pretrained, 'tiny', or a hub id (hub ids need network access or a "
            "populated HF cache)"
        ) from None


def load_model(model: ModelRef | ModelConfig, *, adapter: str | Path | None = None) -> tuple[Model, Processor]:
    """Load (model, processor). For text-only models the processor is the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, BitsAndBytesConfig

    ref = model if isinstance(model, ModelRef) else ModelRef.of(model)
    cfg, name = ref.cfg, ref.path
    device, why = pick_device(cfg.device)
    dtype, dwhy = pick_dtype(cfg.dtype, device)
    quant = ", 4-bit nf4 (QLoRA)" if cfg.load_in_4bit else (", 8-bit" if cfg.load_in_8bit else "")
    log.info(f"[model] {name} on {device} ({why}), dtype {str(dtype).replace('torch.', '')} ({dwhy}){quant}")
    kw: dict[str, Any] = {"dtype": dtype}
    if cfg.load_in_4bit or cfg.load_in_8bit:
        from vlmtune.extras import require

        require("quant", "model.load_in_4bit" if cfg.load_in_4bit else "model.load_in_8bit")
    if cfg.load_in_4bit:
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.float32,
            # The vision tower and projector stay in full precision, as QLoRA recipes for VLMs do.
            # transformers matches these from the start of the module name (or as a suffix), hence ".*".
            llm_int8_skip_modules=[rf".*{m}" for m in VISION_PARTS] + ["lm_head"],
        )
        kw["device_map"] = {"": device if device != "cpu" else "cpu"}
    elif cfg.load_in_8bit:
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_skip_modules=[rf".*{m}" for m in VISION_PARTS] + ["lm_head"]
        )
        kw["device_map"] = {"": device}
    processor, vision = load_processor(ref)
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    loaded: Model = auto.from_pretrained(name, **kw)
    if not (cfg.load_in_4bit or cfg.load_in_8bit):
        loaded.to(device)
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise ConfigError(
                f"--adapter {adapter}: no adapter_config.json there (expected a PEFT adapter dir, "
                "e.g. runs/<name>/adapter)"
            )
        try:
            loaded = PeftModel.from_pretrained(loaded, str(adapter))
        except RuntimeError as e:  # torch's load_state_dict: "size mismatch for ..." when the base differs
            if "size mismatch" not in str(e) and "Missing key" not in str(e):
                raise
            trained_on = _adapter_base(adapter)
            raise ConfigError(
                f"--adapter {adapter} does not fit model '{ref.name}': its weights have other shapes "
                f"(it was trained on {trained_on or 'another base'}). Fix: pass the base it was trained "
                f"on as --model (or model.name), or an adapter trained on '{ref.name}'"
            ) from None
        log.info(f"[model] adapter {adapter}")
    loaded.eval()
    return loaded, processor


def _adapter_base(adapter: str | Path) -> str | None:
    """The base an adapter says it was trained on: its run's config.yaml, else adapter_config.json."""
    try:
        run_config = Path(adapter).parent / "config.yaml"
        if run_config.exists():
            import yaml

            return str(yaml.safe_load(run_config.read_text(encoding="utf-8"))["model"]["name"])
        return json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except Exception:  # only a hint for an error message: an unreadable file gives none
        return None


def lora_target_modules(model: Model, target: str = "language", modules: str = "attention+mlp") -> list[str]:
    """Full names of the linear layers that get LoRA.

    target: language (text model only) | language+projector | all (also the vision tower).
    modules: attention | mlp | attention+mlp (by the usual projection names).
    """
    wanted = (ATTENTION if "attention" in modules else ()) + (MLP if "mlp" in modules else ())
    names = []
    for name, mod in model.named_modules():
        if type(mod).__name__ not in _LINEAR_CLASSES or name.endswith("lm_head"):
            continue
        part = module_part(name)
        if part == "projector":
            if target in ("language+projector", "all"):
                names.append(name)
            continue
        if part == "vision" and target != "all":
            continue
        if name.split(".")[-1] in wanted:
            names.append(name)
    if not names:
        raise ConfigError(
            f"no linear layers match train.lora_target={target} train.lora_modules={modules} in {type(model).__name__}"
        )
    return names


def projector_modules_to_save(model: Model, target: str = "language") -> list[str]:
    """Projectors that LoRA cannot reach, trained in full instead when target includes the projector.

    Gemma-3's projector is a bare weight matrix (`mm_input_projection_weight`) and a norm, not nn.Linear
    layers, so LoRA has nothing to attach to there; PEFT's modules_to_save trains (and saves) a copy of it."""
    if target not in ("language+projector", "all"):
        return []
    out: list[str] = []
    for name, mod in model.named_modules():
        if name.split(".")[-1] not in PROJECTORS or any(name.startswith(o + ".") for o in out):
            continue
        if not any(type(m).__name__ in _LINEAR_CLASSES for m in mod.modules()):
            out.append(name)
    return [n.split(".")[-1] for n in out]


def dir_hash(path: str | Path | None) -> str | None:
    """Content hash of a model/adapter directory (weights and configs). Large files: size + head + tail."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return f"name:{path}"
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
        if f.suffix not in (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".gguf"):
            continue
        h.update(str(f.relative_to(p)).encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


@overload
def text_hash(s: str) -> str: ...
@overload
def text_hash(s: None) -> None: ...
def text_hash(s: str | None) -> str | None:
    return None if s is None else hashlib.sha256(s.encode()).hexdigest()[:16]


def chat_template_of(processor: Processor) -> str | None:
    t = getattr(processor, "chat_template", None) or getattr(
        getattr(processor, "tokenizer", None), "chat_template", None
    )
    return t if isinstance(t, str) else (json.dumps(t, sort_keys=True) if t else None)
