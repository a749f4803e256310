"""Test helpers shared by several test modules (not part of the package)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from transformers import TrainerCallback


class StopAtStep(TrainerCallback):
    """Stop after `step` optimizer steps (after that step's checkpoint): simulates an interrupted run."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `vlmtune serve` subprocess; its stderr (the server's log) is kept in a file."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tmp / f"serve-{self.port}.log"
        env = {**os.environ, "VLMTUNE_CACHE": str(tmp / "cache")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vlmtune", "serve", *args, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),
            env=env,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError(f"server did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def batch_sizes(self) -> list[int]:
        return [
            int(line.split()[1])
            for line in self.log.read_text().splitlines()
            if line.startswith("[serve] ") and " in one batch" in line
        ]
