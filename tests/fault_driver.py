"""Run one vlmtune command and SIGKILL it at a chosen write (used by tests/test_faults.py).

    python tests/fault_driver.py COUNT_FILE KILL_AT -- run recipes/quickstart.yaml name=f ...

Every write the command makes counts as one event: a file opened for writing, an os.replace/os.rename,
a torch.save, a safetensors save_file. At event number KILL_AT (1-based) the process sends itself SIGKILL
before doing that write, as `kill -9` would (no cleanup, no exception handlers, no atexit). KILL_AT 0
never kills; the number of events seen is written to COUNT_FILE on a normal exit, so a test can pick
random points among all the writes of a run (checkpoint saves included). The hooks are installed before
vlmtune, transformers, peft or safetensors are imported, so the names they bind see them.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys

_count = [0]
_kill_at = 0
_real_open = builtins.open


def _event(what: str) -> None:
    _count[0] += 1
    if os.environ.get("FAULT_TRACE"):
        sys.stderr.write(f"[fault] write {_count[0]}: {what}\n")
    if _count[0] == _kill_at:
        sys.stderr.write(f"[fault] SIGKILL at write {_count[0]}: {what}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(fn, describe):
    def wrapper(*args, **kwargs):
        _event(describe(*args, **kwargs))
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn
    return wrapper


def install() -> None:
    def open_(file, mode="r", *args, **kwargs):
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            _event(f"open {file} {mode}")
        return _real_open(file, mode, *args, **kwargs)

    builtins.open = open_
    os.replace = _wrap(os.replace, lambda a, b, **k: f"replace {a} -> {b}")
    os.rename = _wrap(os.rename, lambda a, b, **k: f"rename {a} -> {b}")
    import safetensors.torch
    import torch

    torch.save = _wrap(torch.save, lambda obj, f, *a, **k: f"torch.save {f}")
    safetensors.torch.save_file = _wrap(safetensors.torch.save_file, lambda t, f, *a, **k: f"save_file {f}")


def main() -> int:
    global _kill_at
    count_file, kill_at, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: fault_driver.py COUNT_FILE KILL_AT -- VLMTUNE_ARGS..."
    _kill_at = int(kill_at)
    install()
    from vlmtune.cli import main as vlmtune_main

    rc = vlmtune_main(argv)
    with _real_open(count_file, "w") as f:  # not an event
        f.write(str(_count[0]))
    return rc


if __name__ == "__main__":
    sys.exit(main())
