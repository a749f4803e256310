"""A run directory's life: one writer at a time, a replacement that never deletes first, and a record that
always says what produced the files in it.

    with open_run(cfg, resume=False, overwrite=True) as run:   # lock runs/<name>; work in a staging folder
        ... the data stage writes into run.work ...
        run.publish(cfg)          # config.yaml, then the staging folder swapped into runs/<name> (atomic)
        ... later stages write into run.path ...

- **Lock.** `runs/.<name>.lock` is held with an OS advisory lock (fcntl.flock) for the run's lifetime; the kernel
  releases it when the process ends, kill -9 included, so a lock is never stale. A second writer gets a
  ConfigError naming the process that holds it. Only writers (run, train, quickstart) take it.
- **A new run, or --overwrite,** is built in `runs/.<name>.staging` until its first stage (the data: read,
  every record and image checked, split, written) is complete and the model is resolved; then config.yaml is
  written and the folder is swapped into place with one atomic rename (Linux renameat2 RENAME_EXCHANGE), and
  the earlier run is deleted. Anything that fails before that leaves the earlier run exactly as it was.
- **--resume** compares the new resolved config with the stored config.yaml: a change that a finished stage
  depends on is an error listing the keys; other changes are recorded in config_history.json.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmtune.config import SECTIONS, RunConfig, dump_yaml
from vlmtune.data.example import atomic_write_json, atomic_write_text
from vlmtune.data.prepare import data_done
from vlmtune.distributed import is_main_process
from vlmtune.errors import ConfigError
from vlmtune.train.checkpoints import checkpoints, is_complete

log = logging.getLogger(__name__)

HISTORY = "config_history.json"
RUN_LOG = "run.log"


# ----------------------------------------------------------------------------------------------------- lock
class RunLock:
    """An exclusive advisory lock on `path` (fcntl.flock), held until release() or the process ends."""

    def __init__(self, path: Path, run_dir: Path):
        self.path, self.run_dir = path, run_dir
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ConfigError(
                f"{self.run_dir} is in use by {holder}; two commands writing one run would mix their "
                "files. Fix: wait for it to finish (or stop it), or choose another name=..."
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(["vlmtune", *sys.argv[1:]])[:300],
                }
            ).encode(),
        )
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def lock_if_in_run(out: Path) -> Iterator[None]:
    """Hold the run's lock while writing `out` when `out` lies in a run directory (runs/<name>/<evaluation>),
    so `eval`/`score` into a run cannot mix with a running `vlmtune run`; elsewhere, no lock."""
    run_dir = out.resolve().parent
    if not (run_dir / "config.yaml").exists() or not is_main_process():
        yield
        return
    lock = RunLock(_sibling(run_dir, "lock"), run_dir)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return f"process {info['pid']} (`{info['command']}`, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it is starting: its PID is not written yet)"


# ------------------------------------------------------------------------------------------- atomic swap
def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


# -------------------------------------------------------------------------------- what a resume may change
@dataclass
class Stage:
    name: str
    done: Callable[[Path], bool]
    depends_on: Callable[[str], bool]  # does this stage's result depend on config key k?


def _flat(d: dict) -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1} (section fields; a mapping field such as data.split stays whole)."""
    out = {}
    for k, v in (d or {}).items():
        if k in SECTIONS and isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


# Keys no stored result depends on: where the run lives, which loggers receive copies, whether to add a baseline,
# and how fast the teacher's endpoint is asked (its answers are cached by request).
NEUTRAL = {
    "name",
    "output_dir",
    "train.report_to",
    "eval.zero_shot",
    "teach.concurrency",
    "teach.rpm",
    "teach.tpm",
    "teach.timeout",
    "teach.max_retries",
    "teach.api_key_env",
}
# What a resumed, unfinished training may change: how long it runs and how often it saves, logs and validates.
RESUMABLE_TRAINING = {
    "train.epochs",
    "train.max_steps",
    "train.save_steps",
    "train.logging_steps",
    "train.eval_steps",
    "train.val_max_examples",
    "eval.batch_size",
    "eval.max_new_tokens",
    "eval.mode",
    "eval.n_boot",
}
VALIDATION = {"eval.batch_size", "eval.max_new_tokens"}  # training's own validation generates with these


def _under(*prefixes: str) -> Callable[[str], bool]:
    return lambda k: k.startswith(prefixes)


# The teacher (the `teach:` section) writes the train split's targets: part of the data stage.
STAGES = [
    Stage("the data splits (data/)", data_done, _under("data.", "teach.")),
    Stage(
        "the zero-shot evaluation (zero_shot/)",
        lambda d: (d / "zero_shot" / "metrics.json").exists(),
        _under("data.", "model.", "eval."),
    ),
    Stage(
        "the finished training (adapter/ or model/)",
        lambda d: (d / "train_history.json").exists(),
        lambda k: k.startswith(("data.", "teach.", "model.", "train.")) or k in VALIDATION,
    ),
    Stage(
        "the training checkpoints (checkpoints/)",
        lambda d: any(is_complete(c) for c in checkpoints(d / "checkpoints")),
        lambda k: k.startswith(("data.", "teach.", "model.", "train.", "eval.")) and k not in RESUMABLE_TRAINING,
    ),
    Stage(
        "the fine-tuned evaluation (finetuned/)",
        lambda d: (d / "finetuned" / "metrics.json").exists(),
        _under("data.", "teach.", "model.", "train.", "eval."),
    ),
]


def resume_changes(cfg: RunConfig, run_dir: Path) -> dict[str, list]:
    """{key: [stored, new]} for every setting that differs from run_dir/config.yaml; ConfigError when a finished
    stage depends on one of them (its files would no longer match the config)."""
    stored_file = run_dir / "config.yaml"
    fix = (
        "Fix: pass --overwrite to start it again with these settings, or give a new name=... to keep it and "
        "start another run"
    )
    if not stored_file.exists():
        raise ConfigError(
            f"{run_dir} holds files but no config.yaml saying which settings made them, so --resume "
            f"cannot check them. {fix}"
        )
    try:
        # A key the stored config lacks (written by an older vlmtune) counts as its default.
        stored = {**_flat(RunConfig().to_dict()), **_flat(yaml.safe_load(stored_file.read_text(encoding="utf-8")))}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise ConfigError(
            f"{stored_file} cannot be read ({type(e).__name__}), so --resume cannot check the run. {fix}"
        ) from None
    new = _flat(cfg.to_dict())
    changed = {
        k: [stored.get(k), new.get(k)]
        for k in sorted(set(stored) | set(new))
        if stored.get(k) != new.get(k) and k not in NEUTRAL
    }
    stale = []
    for stage in STAGES:
        keys = [k for k in changed if stage.depends_on(k)]
        if keys and stage.done(run_dir):
            stale.append(f"  {stage.name}: " + ", ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in keys))
    if stale:
        raise ConfigError(
            f"--resume would continue {run_dir} with settings that differ from the ones its finished "
            "stages were made with:\n" + "\n".join(stale) + f"\n{fix}"
        )
    return changed


# -------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """Where a run's stages write. `work` is the staging folder until publish(), then `path` (runs/<name>)."""

    path: Path
    work: Path
    resuming: bool
    changes: dict[str, list] = field(default_factory=dict)
    lock: RunLock | None = None
    log_handler: Any = None

    @property
    def staged(self) -> bool:
        return self.work != self.path

    def publish(self, cfg: RunConfig) -> None:
        """The first stage is complete: record config.yaml and put the run in place (rank 0 only)."""
        if not is_main_process():
            return
        if not self.staged:
            if self.changes:
                history = _read_history(self.path)
                history.append({"resumed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": self.changes})
                atomic_write_json(self.path / HISTORY, history)
                atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))
                log.info(
                    f"[run] resumed with changed settings ({', '.join(self.changes)}): recorded in "
                    f"{self.path / HISTORY}"
                )
            elif not (self.path / "config.yaml").exists():
                atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))
            return
        atomic_write_text(self.work / "config.yaml", dump_yaml(cfg))
        replaced = _sibling(self.path, "replaced")
        if self.path.exists():
            if _exchange(self.work, self.path):
                os.replace(self.work, replaced)
            else:  # not Linux: two renames (a crash between them is repaired by the next open_run)
                os.replace(self.path, replaced)
                os.replace(self.work, self.path)
            log.info(f"[run] the new run's data is ready: it replaces the earlier {self.path}")
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(self.work, self.path)
        self.work = self.path


def _read_history(run_dir: Path) -> list:
    try:
        history = json.loads((run_dir / HISTORY).read_text())
        return history if isinstance(history, list) else []
    except (OSError, ValueError):
        return []


def _sibling(run_dir: Path, what: str) -> Path:
    return run_dir.parent / f".{run_dir.name}.{what}"


def _repair(run_dir: Path) -> None:
    """Finish what an interrupted earlier command left beside run_dir (we hold the lock, so nobody else is)."""
    staging, replaced = _sibling(run_dir, "staging"), _sibling(run_dir, "replaced")
    if replaced.exists() and not run_dir.exists():
        # killed between the two renames of a non-atomic swap: finish it if the new run was ready, else undo it
        src = staging if (staging / "config.yaml").exists() else replaced
        os.replace(src, run_dir)
        log.warning(f"[run] repaired an interrupted replacement of {run_dir}")
    for leftover in (staging, replaced):
        if leftover.exists():
            shutil.rmtree(leftover)


def _remove_unfinished_writes(run_dir: Path) -> None:
    """Temporary files of atomic writes a kill interrupted (.<name>.<random>.tmp): never results, never read."""
    left = [p for p in run_dir.rglob(".*.tmp") if p.is_file()]
    for p in left:
        p.unlink()
    if left:
        log.info(f"[run] removed {len(left)} unfinished write(s) left by an interrupted command")


@contextlib.contextmanager
def open_run(cfg: RunConfig, *, resume: bool, overwrite: bool) -> Iterator[Run]:
    """Lock runs/<name> and decide where the stages write (see the module docstring). Rank 0 does the file
    work; other ranks of a launcher get the final path and wait for rank 0 at the data stage's barrier."""
    from vlmtune import logs

    final = cfg.run_dir
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite contradict each other. Fix: --resume to continue the run, "
            "--overwrite to replace it"
        )
    if not is_main_process():
        yield Run(final, final, resuming=resume)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = RunLock(_sibling(final, "lock"), final)
    lock.acquire()
    run = Run(final, final, resuming=False, lock=lock)
    try:
        _repair(final)
        exists = final.is_dir() and any(final.iterdir())
        if final.exists() and not final.is_dir():
            raise ConfigError(f"{final} is a file, not a run directory. Fix: choose another name=... or output_dir=...")
        if exists and not (resume or overwrite):
            raise ConfigError(
                f"{final} already holds a run. Fix: pass --resume to continue it, --overwrite to replace "
                "it (the earlier run stays until the new one's data is ready), or choose another name=..."
            )
        if exists and resume:
            run.resuming = True
            run.changes = resume_changes(cfg, final)
            _remove_unfinished_writes(final)
        else:
            if resume:
                log.info(f"[run] --resume: {final} holds no run yet; starting it")
            run.work = _sibling(final, "staging")
            run.work.mkdir()
        run.log_handler = logs.add_log_file(run.work / RUN_LOG, shown_as=final / RUN_LOG)
        yield run
    finally:
        if run.log_handler is not None:
            logs.remove_log_file(run.log_handler)
        if run.staged and run.work.exists():
            shutil.rmtree(run.work, ignore_errors=True)  # never published: the earlier run is untouched
        lock.release()
