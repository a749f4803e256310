"""`vlmtune chat` driven as a person would: a real process on a pseudo-terminal, typed into line by line."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time


class Terminal:
    """A process on a pty: `type` a line, `read_until` a pattern appears on the screen."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.screen = ""

    def read_until(self, pattern: str, timeout: float = 120) -> str:
        """The text after the previous read up to and including `pattern` (a regex)."""
        deadline = time.time() + timeout
        while not (m := re.search(pattern, self.screen)):
            if time.time() > deadline:
                raise AssertionError(f"no {pattern!r} on the screen after {timeout}s:\n{self.screen[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode(errors="replace").replace("\r\n", "\n")
                except OSError:  # the process closed the terminal
                    if self.proc.poll() is not None and not re.search(pattern, self.screen):
                        raise AssertionError(f"process ended before {pattern!r}:\n{self.screen[-3000:]}")
        seen, self.screen = self.screen[: m.end()], self.screen[m.end() :]
        return seen

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


def expected_answers(model_dir, turns, max_new_tokens):
    """What vlmtune's own chat code answers to the same turns in-process ([(image or None, question)])."""
    from vlmtune.config import ModelConfig
    from vlmtune.infer.chat import Conversation, complete
    from vlmtune.models.load import load_model

    model, processor = load_model(ModelConfig(name=str(model_dir), device="cpu"))
    conv, answers = Conversation(), []
    for image, question in turns:
        if image:
            conv.attach(image)
        req = conv.ask(question, max_new_tokens=max_new_tokens)
        [done] = complete(model, processor, [req])
        conv.answered(req, done.text)
        answers.append(done.text)
    return answers


def test_chat_in_a_terminal(lively_model_dir, count_data, tmp_path):
    image, image2 = count_data[0].images[0], count_data[1].images[0]
    turns = [(image, "How many red shapes are there?"), (None, "And blue ones?"), (image2, "Which has more?")]
    expected = expected_answers(lively_model_dir, turns, 10)
    assert len(set(expected)) > 1 and all(expected), expected  # answers that can tell turns apart

    env = {**os.environ, "VLMTUNE_CACHE": str(tmp_path / "cache"), "TERM": "dumb"}
    term = Terminal([sys.executable, "-m", "vlmtune", "chat", str(lively_model_dir), "--max-new-tokens", "10"], env)
    try:
        term.read_until(r"/help for commands\.\n")
        term.read_until(r"you> ")
        term.type("/image " + str(tmp_path / "missing.png"))
        assert "error: image not found" in term.read_until(r"you> ")
        for (img, question), want in zip(turns, expected):
            if img:
                term.type("/image " + img)
                assert "[image attached" in term.read_until(r"you> ")
            term.type(question)
            seen = term.read_until(r"you> ")
            answer = seen.split("model> ", 1)[1].split("\n")[0]
            assert answer == want, seen
        term.type("/save " + str(tmp_path / "chat.jsonl"))
        assert "[saved 6 messages" in term.read_until(r"you> ")
        term.type("/reset")
        assert "[new conversation]" in term.read_until(r"you> ")
        term.type("/image " + image)
        term.read_until(r"you> ")
        term.type(turns[0][1])
        seen = term.read_until(r"you> ")
        assert seen.split("model> ", 1)[1].split("\n")[0] == expected[0]  # the history is gone: turn 1 again
        term.type("/quit")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    record = json.loads((tmp_path / "chat.jsonl").read_text())
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"] * 3
    assert record["images"] == [os.path.abspath(image), os.path.abspath(image2)]
    assert [m["content"] for m in record["messages"][1::2]] == expected
    assert record["messages"][0]["content"] == "<image>\nHow many red shapes are there?"


def test_sampling_is_seeded_and_greedy_is_default(lively_model_dir, count_data):
    from vlmtune.config import ModelConfig
    from vlmtune.infer.chat import Conversation, complete
    from vlmtune.infer.generate import Sampling
    from vlmtune.models.load import load_model

    model, processor = load_model(ModelConfig(name=str(lively_model_dir), device="cpu"))
    conv = Conversation()
    conv.attach(count_data[2].images[0])

    def answer(sampling):
        return complete(model, processor, [conv.ask("How many?", max_new_tokens=12, sampling=sampling)])[0].text

    hot = Sampling(temperature=1.5, seed=7)
    assert answer(hot) == answer(hot)
    assert len({answer(Sampling(temperature=1.5, seed=s)) for s in range(4)}) > 1
    assert answer(Sampling()) == answer(Sampling())
