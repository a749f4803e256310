"""Training checkpoints that a kill cannot corrupt: a sentinel written last marks a checkpoint complete.

    mark_complete(Path("runs/q/checkpoints/checkpoint-30"))        # after transformers has saved it
    last = last_complete_checkpoint(Path("runs/q/checkpoints"))    # what --resume continues from

transformers writes checkpoint-N file by file (weights, optimizer, scheduler, RNG state, trainer state);
a kill -9 in between leaves a folder that looks like a checkpoint but cannot be resumed from. The sentinel
lists every file of the checkpoint with its size, so a folder missing any of them is not complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from vlmtune.data.example import atomic_write_json
from vlmtune.distributed import is_main_process

log = logging.getLogger(__name__)

SENTINEL = "vlmtune-complete.json"  # in checkpoint-N/: every file of the checkpoint with its size, written last


def mark_complete(checkpoint: Path) -> None:
    files = {
        str(f.relative_to(checkpoint)): f.stat().st_size
        for f in sorted(checkpoint.rglob("*"))
        if f.is_file() and f.name != SENTINEL
    }
    atomic_write_json(checkpoint / SENTINEL, {"files": files})


def is_complete(checkpoint: Path) -> bool:
    """The checkpoint's sentinel exists and every file it lists is there with its size."""
    try:
        files = json.loads((checkpoint / SENTINEL).read_text())["files"]
        return bool(files) and all((checkpoint / f).stat().st_size == size for f, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N folders in `folder`, newest (highest N) first."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()),
        key=lambda p: int(p.name.split("-")[1]),
        reverse=True,
    )


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint-N in `folder`. Incomplete ones (a kill while saving) are reported and
    moved to folder/incomplete/, so that neither a resume nor transformers' rotation picks them up."""
    best = None
    for ckpt in checkpoints(folder):
        if is_complete(ckpt):
            best = best or ckpt
        elif is_main_process():
            aside = folder / "incomplete" / f"{ckpt.name}-{int(time.time())}"
            aside.parent.mkdir(exist_ok=True)
            os.replace(ckpt, aside)
            log.warning(
                f"[train] {ckpt} is incomplete (interrupted while it was being saved): ignored, moved to {aside}"
            )
    return best
