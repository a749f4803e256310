"""Pacing of request starts for `vlmtune.infer.remote`: at most `rpm` requests and `tpm` tokens per minute.

pacer = Pacer(rpm=600, tpm=60_000)
reserved = pacer.acquire(est_tokens)      # waits for this request's slot
...                                       # send it
pacer.correct(reserved, used_tokens)      # what the response says it cost
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Spaces request starts so that at most `rpm` requests and `tpm` tokens go out per minute (0: no limit).

    Two clocks: the request clock advances 60/rpm s per request; the token clock advances tokens*60/tpm s
    per request, first by an estimate (the larger of the request's own and the mean of the responses so far),
    then corrected by the tokens the response reports. With a token limit, the first request goes alone: until
    one response has said what a request costs, a burst of estimates could overshoot the limit. A start that
    came late (a busy machine) is made up by the next ones, up to `catch_up` seconds of the budget, so the rate
    over a minute is the limit, not less."""

    def __init__(
        self, rpm: float = 0, tpm: float = 0, clock: Callable[[], float] = time.monotonic, catch_up: float = 1.0
    ):
        self.rpm, self.tpm, self.clock, self.catch_up = rpm, tpm, clock, catch_up
        self._lock = threading.Lock()
        self._next_req: float | None = None
        self._next_tok: float | None = None
        self._used, self._done = 0, 0
        self._probe = threading.Event()  # set once a first response (or failure) has come back
        self._probing = False

    def estimate(self, est_tokens: int) -> int:
        """The tokens to reserve for a request: its own estimate, or the mean actual use so far if larger."""
        with self._lock:
            return max(est_tokens, self._used // self._done if self._done else 0)

    def acquire(self, est_tokens: int, wait_first: float = 600.0) -> int:
        """Wait for this request's slot; returns the tokens reserved for it (pass them to `correct`)."""
        if not self.rpm and not self.tpm:
            return est_tokens
        if self.tpm:
            with self._lock:
                first, self._probing = not self._probing, True
            if not first:
                self._probe.wait(wait_first)
        est_tokens = self.estimate(est_tokens)
        with self._lock:
            now = self.clock()
            floor = now - self.catch_up  # a slot missed longer ago than this is lost, not made up
            start = max(
                floor,
                self._next_req if self._next_req is not None else now,
                self._next_tok if self._next_tok is not None else now,
            )
            if self.rpm:
                self._next_req = start + 60.0 / self.rpm
            if self.tpm:
                self._next_tok = start + est_tokens * 60.0 / self.tpm
        delay = start - self.clock()
        if delay > 0:
            time.sleep(delay)
        return est_tokens

    def correct(self, est_tokens: int, used_tokens: int | None) -> None:
        if self.tpm and not self._probe.is_set():
            with self._lock:  # the others were held back on purpose: that wait is not a lag to make up
                self._next_tok = max(self._next_tok if self._next_tok is not None else 0.0, self.clock())
        self._probe.set()
        if self.tpm and used_tokens is not None:
            with self._lock:
                self._used += used_tokens
                self._done += 1
                self._next_tok = (self._next_tok or self.clock()) + (used_tokens - est_tokens) * 60.0 / self.tpm
