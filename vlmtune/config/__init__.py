"""Typed run configuration: one set of dataclasses feeds the recipe YAML, `key=value` overrides and `--help`.

    cfg = load_config("recipes/quickstart.yaml", ["train.epochs=2", "model.name=llava-hf/llava-1.5-7b-hf"])

Every field carries its documentation in `metadata["help"]`; `describe_fields()` prints them.
Unknown keys are errors with a did-you-mean, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from vlmtune.config.fields import BOUNDS, _f, bounds_text, check_bounds, check_value
from vlmtune.config.sections import (
    CHOICES,
    MEMORY_METHODS,
    QUICKSTART_OVERRIDES,
    SECTIONS,
    ConnectorConfig,
    DataConfig,
    EvalConfig,
    MemoryConfig,
    ModelConfig,
    RunConfig,
    TeachConfig,
    TrainConfig,
)
from vlmtune.errors import ConfigError

__all__ = [
    "BOUNDS",
    "CHOICES",
    "MEMORY_METHODS",
    "QUICKSTART_OVERRIDES",
    "SECTIONS",
    "ConnectorConfig",
    "DataConfig",
    "EvalConfig",
    "MemoryConfig",
    "ModelConfig",
    "RunConfig",
    "TeachConfig",
    "TrainConfig",
    "_f",
    "bounds_text",
    "check_bounds",
    "check_eval",
    "check_value",
    "coerce_fields",
    "describe_fields",
    "describe_options",
    "dump_yaml",
    "field_default",
    "from_dict",
    "load_config",
    "validate",
]


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(
        f"unknown key '{key}' in {where}.{hint} Known: {', '.join(known)}. Fix: use one of the known "
        "keys (`vlmtune ls` lists them with their help)"
    )


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's type, with an error naming the key."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if value is None:
        if type(None) in args or typ is Any:
            return None
        raise ConfigError(f"'{key}' cannot be null")
    if origin is typing.Union or (origin is not None and type(None) in args):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key) if inner else value
    try:
        if typ is bool or typ == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if typ in (int, "int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ in (float, "float"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ in (str, "str"):
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        if typing.get_origin(typ) in (list, dict):
            typ = typing.get_origin(typ)
        if typ in (list, "list"):
            if isinstance(value, str):
                return [v for v in value.split(",") if v] if value not in ("[]", "") else []
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            return list(value)
        if typ in (dict, "dict"):
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError, OverflowError):
        name = getattr(typ, "__name__", typ)
        raise ConfigError(f"'{key}' expects {name}, got {value!r}. Fix: give {key} a value of type {name}") from None
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce_fields(cls: type, values: dict, where: str) -> dict[str, Any]:
    """`values` checked against the fields of dataclass `cls`: unknown keys (with a did-you-mean) and values of the
    wrong type are ConfigErrors naming `where.key`. Returns the coerced values."""
    if not isinstance(values, dict):
        raise ConfigError(f"'{where}' must be a mapping of its fields, got {type(values).__name__}")
    types = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in values.items():
        if not isinstance(k, str) or k not in types:
            raise _unknown(str(k), list(types), f"'{where}'")
        out[k] = _coerce(v, types[k], f"{where}.{k}")
        check_value(fields[k], out[k], f"{where}.{k}")
    return out


# Keys that moved, with where they live now (an old recipe gets told, not silently ignored).
MOVED = {
    "eval.permutations": "data.task_options.permutations (mcq)",
    "eval.bertscore": "data.task_options.bertscore (dialog)",
    "eval.bertscore_model": "data.task_options.bertscore_model (dialog)",
}


def from_dict(d: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from a nested dict (a parsed recipe), validating every key and value."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(d).__name__}")
    cfg = RunConfig()
    top = [f.name for f in dataclasses.fields(RunConfig)]
    for key, value in d.items():
        if not isinstance(key, str) or key not in top:
            raise _unknown(str(key), top, where)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{where}: '{key}' must be a mapping of its fields, got {type(value).__name__}. "
                    f"Fix: write it as `{key}: {{field: value, ...}}` (`vlmtune ls` lists the fields)"
                )
            for k in value:
                if f"{key}.{k}" in MOVED:
                    raise ConfigError(
                        f"{where}: '{key}.{k}' has moved to {MOVED[key + '.' + k]}. Fix: put the setting there instead"
                    )
            section = getattr(cfg, key)
            for k, v in coerce_fields(SECTIONS[key], value, key).items():
                setattr(section, k, v)
        else:
            setattr(cfg, key, _coerce(value, _field_types(RunConfig)[key], key))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Check choices and ranges; errors name the key and what to type instead."""
    for (sec, key), allowed in CHOICES.items():
        v = getattr(getattr(cfg, sec), key)
        if v not in allowed:
            raise ConfigError(f"'{sec}.{key}' is {v!r}; choose one of {', '.join(allowed)}")
    if cfg.model.load_in_4bit and cfg.model.load_in_8bit:
        raise ConfigError("choose one of model.load_in_4bit and model.load_in_8bit")
    for sec in ("", *SECTIONS):
        check_bounds(getattr(cfg, sec) if sec else cfg, sec)
    if cfg.data.source in ("files", "jsonl") and not (cfg.data.path or cfg.data.train):
        raise ConfigError(
            "data.source=files needs data.path (one file to split) or data.train/data.val/data.test. "
            "Fix: give data.path=FILE, or data.train=FILE and data.test=FILE"
        )
    if cfg.data.source == "hf" and not cfg.data.hf_name:
        raise ConfigError(
            "data.source=hf needs data.hf_name. Fix: give a hub dataset id (owner/name) or a local "
            "folder as data.hf_name"
        )
    if cfg.data.source == "hf" and (cfg.data.train or cfg.data.val) and not cfg.data.test:
        raise ConfigError(
            "data.train/data.val name splits of the hf dataset but data.test does not. Fix: give "
            "data.test=SPLIT (or leave all three unset to split data.hf_split by data.split)"
        )
    if cfg.data.source in ("files", "jsonl") and cfg.data.path is None and not cfg.data.test:
        raise ConfigError(
            "data.train is set but data.test is not. Fix: give data.test=FILE (or data.path to split one file)"
        )
    fractions = cfg.data.split
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in fractions.values())
    if (
        not numbers
        or set(fractions) - {"train", "val", "test"}
        or "train" not in fractions
        or abs(sum(fractions.values()) - 1.0) > 1e-6
    ):
        raise ConfigError(
            f"data.split must map train/val/test to fractions in [0, 1] summing to 1, got {fractions}. "
            "Fix: e.g. data.split={train: 0.8, val: 0.1, test: 0.1}"
        )
    check_eval(cfg.eval)
    validate_memory(cfg.memory)
    validate_connector(cfg)


def check_eval(e: EvalConfig) -> None:
    """The eval section's own checks (a recipe's, or the one `vlmtune eval` builds from its flags)."""
    for key in ("mode", "backend"):
        if getattr(e, key) not in CHOICES[("eval", key)]:
            raise ConfigError(f"'eval.{key}' is {getattr(e, key)!r}; choose one of {', '.join(CHOICES[('eval', key)])}")
    if e.concurrency < 1 or e.max_retries < 0 or e.timeout <= 0 or e.rpm < 0 or e.tpm < 0:
        raise ConfigError(
            "'eval.concurrency' must be >= 1, 'eval.max_retries' >= 0, 'eval.timeout' > 0 and "
            "'eval.rpm' / 'eval.tpm' >= 0 (0: no limit)"
        )
    if e.backend == "openai" and not e.endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"'eval.endpoint' is {e.endpoint!r}; give the server's URL ending in /v1, e.g. "
            "http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)"
        )


def validate_memory(m: MemoryConfig) -> None:
    unknown = [x for x in m.compare if x not in MEMORY_METHODS]
    if unknown:
        raise ConfigError(f"memory.compare has unknown method(s) {unknown}; choose from {', '.join(MEMORY_METHODS)}")
    if (
        set(m.mix) - {"retrieved", "oracle", "removed"}
        or abs(sum(m.mix.values()) - 1.0) > 1e-6
        or any(v < 0 for v in m.mix.values())
    ):
        raise ConfigError(f"memory.mix must map retrieved/oracle/removed to shares summing to 1, got {m.mix}")
    for key in ("k", "token_budget"):
        if getattr(m, key) < 1:
            raise ConfigError(f"'memory.{key}' must be >= 1")
    if m.max_images < 0 or m.capacity < 0 or m.capped_capacity < 2 or m.window < 0:
        raise ConfigError(
            "memory.max_images, memory.capacity and memory.window must be >= 0, memory.capped_capacity >= 2"
        )


def validate_connector(cfg: RunConfig) -> None:
    c = cfg.connector
    if not c.enabled:
        return
    if cfg.train.loss_on != "assistant":
        raise ConfigError(
            "connector.enabled trains on the answers only: the memory placeholders must not carry loss. "
            "Fix: set train.loss_on=assistant"
        )
    if c.queries and c.fusion_dim and c.fusion_dim % c.query_heads:
        raise ConfigError(f"connector.query_heads={c.query_heads} must divide connector.fusion_dim={c.fusion_dim}")
    if cfg.memory.enabled:
        raise ConfigError("connector.enabled and memory.enabled both rewrite the prompts; choose one")


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply `key=value` strings (values parsed as YAML) to a nested dict: `name=x`, `train.lr=1e-4`, and deeper
    keys into mapping fields such as `data.split.test=0.2` or `data.task_options.labels=[cat,dog]`."""
    import copy

    d = copy.deepcopy(d)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' must look like key=value. Fix: e.g. train.epochs=3")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            problem = str(e).splitlines()[0]
            raise ConfigError(
                f"override '{ov}': the value is not valid YAML ({problem}). Fix: quote it, e.g. "
                f"{key}='\"...\"', or close its brackets"
            ) from None
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override key '{key}' must be 'field', 'section.field' or deeper, e.g. train.lr")
        node = d
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return d


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    d: dict = {}
    where = "overrides"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"recipe not found: {p}. Shipped recipes live in recipes/ (see `vlmtune ls`)")
        if p.is_dir():
            raise ConfigError(f"recipe {p} is a folder. Fix: give a recipe YAML file, e.g. recipes/quickstart.yaml")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}. Fix: check the indentation and quoting there") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}). Fix: save the recipe as UTF-8") from None
        where = str(p)
        if d is None or d == {}:
            raise ConfigError(
                f"{p}: the recipe is empty. Fix: give at least the data and model sections (see "
                "recipes/quickstart.yaml, or `vlmtune ls` for every key)"
            )
        if not isinstance(d, dict):
            raise ConfigError(
                f"{p}: expected a mapping (key: value lines) at the top level, got "
                f"{type(d).__name__}. Fix: write the recipe as `data: {{...}}`, `model: {{...}}`, ..."
            )
    return from_dict(apply_overrides(d, overrides or []), where=where)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default value, a fresh one from its default_factory when it has one."""
    if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def describe_fields() -> str:
    """Every config key with its default and help, for `--help` and the README."""
    lines = []
    for sec, cls in [("", RunConfig), *SECTIONS.items()]:
        for f in dataclasses.fields(cls):
            if not sec and f.name in SECTIONS:  # the sections themselves, listed key by key
                continue
            default = field_default(f)
            key = f"{sec}.{f.name}" if sec else f.name
            rule = bounds_text(f.metadata)
            lines.append(f"  {key:<28} {default!r:<14} {f.metadata.get('help', '')}" + (f" [{rule}]" if rule else ""))
    return "\n".join(lines)


def describe_options(cls: type, indent: str = "  ") -> str:
    """One line per field of an options dataclass (a task's Options): name, default, help."""
    lines = []
    for f in dataclasses.fields(cls):
        default = field_default(f)
        rule = bounds_text(f.metadata)
        lines.append(
            f"{indent}{f.name:<26} {default!r:<14} {f.metadata.get('help', '')}" + (f" [{rule}]" if rule else "")
        )
    return "\n".join(lines)
