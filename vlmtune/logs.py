"""Logging and progress bars: every module logs through `logging.getLogger(__name__)`; the CLI decides where
it goes.

    log = logging.getLogger(__name__)
    log.info("[train] %d steps", steps)
    for batch in progress_bar(batches, desc="eval"):   # a bar on stderr, unless progress is off
        ...

`setup(quiet=...)` (called by the CLI) sends vlmtune's messages to stderr, so stdout carries results only;
`quiet=True` keeps errors only (the CLI still prints its results) and turns the progress bars off. It also
silences known third-party warnings that say nothing a user can act on (KNOWN_NOISE). Console lines longer
than MAX_LINE are cut; a run copies every message whole to its log file (`add_log_file`: runs/<name>/run.log).

One bar at a time: a bar asked for while another is showing (validation inside training) is not drawn,
so bars never nest. On a terminal a bar is a tqdm bar; when stderr is a file or a pipe (CI, `nohup`,
`2> log`) it is a log line every PROGRESS_EVERY_S seconds and one when it ends, with no carriage returns.
A library user who calls nothing here gets Python's defaults: warnings only, and progress bars on.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = "vlmtune"
PROGRESS_EVERY_S = 15.0
MAX_LINE = 400  # console lines are cut here (about five terminal rows); the run's log file keeps them whole
_state: dict[str, Any] = {"progress": True, "active": None, "log_file": None}
progress_log = logging.getLogger("vlmtune.progress")

# (logger, start of the message) of third-party warnings that need no action: the CLI drops them.
KNOWN_NOISE = [
    # without torchvision, transformers uses the PIL image processors, which is what vlmtune wants on CPU
    ("transformers.utils.import_utils", "`CLIPImageProcessor` requires torchvision"),
    ("transformers.utils.import_utils", "`SiglipImageProcessor` requires torchvision"),
    # checkpoints are found by their step number when mtimes are coarse; nothing to fix
    ("transformers.trainer_utils", "mtime may not be reliable"),
    # bitsandbytes' CPU path works without the optional `kernels` package
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
]
# Python warnings (category, message regex) raised inside libraries on every adapter load.
KNOWN_WARNINGS = [(FutureWarning, r"`is_gradient_checkpointing` is deprecated")]


class _DropKnown(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


class _ConsoleHandler(logging.StreamHandler):
    """stderr handler that writes above a live tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        bar = _state["active"]
        if bar is not None and not isinstance(bar, LineProgress):
            try:
                bar.write(self.format(record), file=self.stream)
                return
            except Exception:
                self.handleError(record)
        super().emit(record)


class ConsoleFormatter(logging.Formatter):
    """The message text, cut to MAX_LINE characters with a pointer to the run's log file, which has it whole."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if len(text) <= MAX_LINE:
            return text
        where = f"; whole line in {_state['log_file']}" if _state["log_file"] else ""
        return f"{text[:MAX_LINE]}... [{len(text) - MAX_LINE} more characters{where}]"


def setup(*, quiet: bool = False, stream: Any = None) -> None:
    """Console logging for the CLI: INFO and up (ERROR only when quiet) to stderr, message text only."""
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if getattr(h, "_vlmtune_console", False):
            logger.removeHandler(h)
    handler = _ConsoleHandler(stream or sys.stderr)
    handler.setFormatter(ConsoleFormatter("%(message)s"))
    handler.setLevel(logging.ERROR if quiet else logging.INFO)
    handler._vlmtune_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # the console handler filters (-q); a run's log file gets INFO whole
    # A library's bare `logging.info(...)` calls logging.basicConfig(), which gives the root logger a stream
    # handler, and every vlmtune line then printed twice ("[x] ..." and "INFO:vlmtune...:[x] ..."): seen after a
    # dialog evaluation. basicConfig does nothing when the root logger has a handler, so give it a silent one.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    set_progress(not quiet)
    for name, prefix in KNOWN_NOISE:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) and f.prefix == prefix for f in lg.filters):
            lg.addFilter(_DropKnown(prefix))
    # transformers' own bars (loading weights, writing shards) flash by for a fraction of a second: off. The CLI
    # sets HF_HUB_DISABLE_PROGRESS_BARS before transformers is imported; this covers an earlier import.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if quiet:
        warnings.filterwarnings("ignore")
        for name in ("transformers", "peft", "accelerate", "bitsandbytes"):
            logging.getLogger(name).setLevel(logging.ERROR)


def add_log_file(path: Any, shown_as: Any = None) -> logging.Handler:
    """Copy vlmtune's INFO-and-up messages, whole and timestamped, to `path` (appended) until `remove_log_file`.
    `shown_as`: the path console lines point at for the whole text (where the file will be after a rename)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(ROOT)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the console handler keeps its own level (-q)
    _state["log_file"] = str(shown_as or path)
    return handler


def remove_log_file(handler: logging.Handler) -> None:
    logging.getLogger(ROOT).removeHandler(handler)
    handler.close()
    _state["log_file"] = None


def set_progress(enabled: bool) -> None:
    """Turn progress bars on or off for the whole process."""
    _state["progress"] = enabled


def progress_enabled() -> bool:
    return _state["progress"]


class LineProgress:
    """A progress bar for logs (stderr not a terminal): a line every `every_s` seconds and a last one on close,
    e.g. `[train] 113/452 (25%), 0:31, loss=0.0485, lr=6.1e-05, samples/s=58.1`."""

    def __init__(self, total: int | None, desc: str, initial: int = 0, every_s: float | None = None) -> None:
        self.total, self.desc, self.n = total, desc, initial
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        finished = self.total is not None and self.n >= self.total  # close() says that, once
        if not finished and time.monotonic() - self.last >= self.every_s:
            self._line()

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        self.postfix = kw

    def _line(self, done: str = "") -> None:
        self.last = time.monotonic()
        self.lines += 1
        secs = int(self.last - self.start)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        progress_log.info(f"[{self.desc}] {count}{pct}, {secs // 60}:{secs % 60:02d}{extra}{done}")

    def close(self) -> None:
        # short bars leave no line; a long one says it finished
        if self.lines or time.monotonic() - self.start >= self.every_s:
            self._line(", done")


def make_bar(*, total: int | None, desc: str, initial: int = 0) -> Any:
    """A bar for code that updates it by hand (`update`, `set_postfix`, `close`; then `release_bar`), or None
    when progress is off or another bar is showing."""
    if not _state["progress"] or _state["active"] is not None:
        return None
    if getattr(sys.stderr, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        bar: Any = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    else:
        bar = LineProgress(total, desc, initial)
    _state["active"] = bar
    return bar


def release_bar(bar: Any) -> None:
    """Close a bar from make_bar (None is fine)."""
    if bar is None:
        return
    bar.close()
    if _state["active"] is bar:
        _state["active"] = None


def progress_bar(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = False) -> Iterable[T]:
    """`iterable` with a bar on stderr while it is iterated (none when progress is off or another bar shows)."""
    if not _state["progress"]:
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return _tracked(iterable, desc, total)


def _tracked(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    bar = make_bar(total=total, desc=desc)
    if bar is None:
        yield from iterable
        return
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        release_bar(bar)
