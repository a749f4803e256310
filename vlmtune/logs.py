"""Logging and progress bars: every module logs through `logging.getLogger(__name__)`; the CLI decides where
it goes.

    log = logging.getLogger(__name__)
    log.info("[train] %d steps", steps)
    for batch in progress_bar(batches, desc="eval"):   # a tqdm bar on stderr, unless progress is off
        ...

`setup(quiet=...)` (called by the CLI) sends vlmtune's messages to stderr, so stdout carries results only;
`quiet=True` keeps warnings and errors and turns the progress bars off. A library user who calls nothing
here gets Python's defaults: warnings only, and progress bars on.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, TypeVar

T = TypeVar("T")
ROOT = "vlmtune"
_state = {"progress": True}


def setup(*, quiet: bool = False, stream: Any = None) -> None:
    """Console logging for the CLI: INFO and up (WARNING and up when quiet) to stderr, message text only."""
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if getattr(h, "_vlmtune_console", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._vlmtune_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    set_progress(not quiet)


def set_progress(enabled: bool) -> None:
    """Turn tqdm progress bars on or off for the whole process."""
    _state["progress"] = enabled


def progress_enabled() -> bool:
    return _state["progress"]


def progress_bar(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = False) -> Iterable[T]:
    """`iterable` wrapped in a tqdm bar on stderr (or returned as it is when progress is off)."""
    if not _state["progress"]:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave, file=sys.stderr)
