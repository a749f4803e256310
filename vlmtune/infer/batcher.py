"""Dynamic batching: one worker thread owns the model; requests that arrive while it is busy (or within
`wait_s` of each other, up to 4 * wait_s in all) are answered together by one `generate` call.

    engine = Engine(model, processor, max_batch=16)
    job = engine.submit(ChatRequest(messages, images), on_text=print)   # from any thread
    job.accepted.result()   # raises DataError at once for a request the model cannot take
    completion = job.done.result()
    engine.close()

Greedy requests batch together whatever their `max_new_tokens`; sampled ones batch with requests of the
same settings, and a sampled request with a seed runs alone (so its seed gives the same answer each time).
Every tokenizer and model call happens on the worker thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from vlmtune.infer.chat import ChatRequest, OnText, check_request, complete
from vlmtune.processing import Model, Processor

log = logging.getLogger(__name__)


@dataclass
class Job:
    request: ChatRequest
    on_text: OnText | None = None
    accepted: Future = field(default_factory=Future)  # the prompt's token count, or the reason it was refused
    done: Future = field(default_factory=Future)  # the Completion


class Engine:
    """A model answering requests from many threads, in batches."""

    def __init__(self, model: Model, processor: Processor, *, max_batch: int = 16, wait_s: float = 0.02) -> None:
        self.model, self.processor = model, processor
        self.max_batch, self.wait_s = max_batch, wait_s
        self.batches: list[int] = []  # the size of each generate call, for logs and benchmarks
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="vlmtune-engine", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest, on_text: OnText | None = None) -> Job:
        job = Job(request, on_text)
        self._queue.put(job)
        return job

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        # Gather what arrives within wait_s of the last arrival (clients answered by the previous batch come
        # back one by one), but wait no more than 4 * wait_s in all.
        start = time.monotonic()
        while len(jobs) < self.max_batch:
            now = time.monotonic()
            try:
                job = self._queue.get(timeout=max(0.0, min(self.wait_s, start + 4 * self.wait_s - now)))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            jobs.append(job)
        return jobs

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            ok = []
            for job in jobs:
                try:
                    job.accepted.set_result(check_request(self.model, self.processor, job.request))
                    ok.append(job)
                except Exception as e:
                    job.accepted.set_exception(e)
                    job.done.set_exception(e)
            for group in _groups(ok):
                self._run(group)

    def _run(self, jobs: list[Job]) -> None:
        self.batches.append(len(jobs))
        t0 = time.monotonic()
        try:
            results = complete(self.model, self.processor, [j.request for j in jobs], [j.on_text for j in jobs])
        except Exception as e:  # a failure of the batch fails each of its requests, not the server
            log.exception("[serve] generation failed")
            for j in jobs:
                j.done.set_exception(e)
            return
        log.info(
            f"[serve] {len(jobs)} request{'s' if len(jobs) > 1 else ''} in one batch, {time.monotonic() - t0:.2f}s"
        )
        for j, r in zip(jobs, results):
            j.done.set_result(r)


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that can share one generate call: same Sampling; a seeded sampled request alone."""
    groups: dict[Any, list[Job]] = {}
    for i, job in enumerate(jobs):
        s = job.request.sampling
        key = "greedy" if s.greedy else ("alone", i) if s.seed is not None else s
        groups.setdefault(key, []).append(job)
    return list(groups.values())
