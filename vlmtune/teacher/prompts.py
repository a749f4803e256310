"""Teacher prompts: versioned Jinja2 templates, rendered from what the student sees, never from the gold answer.

    tpl = load_template("reminder")                 # shipped: reminder | reasoning | reminder_base; or a .j2 path
    req = tpl.request(example, params={"temperature": 0.0, "max_tokens": 256})
    check_teacher_input(tpl, example)               # raises DataError if the input depends on the gold answer

A template has two blocks, `system` and `user` (a missing or empty block is left out), and may set
`version` (bumped when the wording changes), `block` (the tag the teacher writes: reminder | reasoning) and
`stop` (stop sequences sent with each request). Its `tag`, which enters every request's cache key, is
`<name>-v<version>+<sha256 of the template source, 12 hex>`: any edit re-asks, even without a new version.

The context is built from `example.prompt_messages()` only (the conversation without its final answer):
  images        one "<image>\\n" per image of the example (where the image goes in the user message)
  context       the first user message's lines before its question (instruction, caption)
  history       [{"question", "answer"}] of the earlier rounds
  question      the asked question (the last line of the last user message)
  conversation  "Q: ...\\nA: ...\\n...\\nQ: <question>" (the seed's layout)
  gold_answer   the asked round's gold answer, ONLY with rationalize=True (teach.rationalize)
Templates run in Jinja2's sandbox with StrictUndefined: a name the context lacks is an error, not "".

The gold-answer check (`check_teacher_input`): the task's own `check_example` (dialog: the asked round's answer
is not in the input), then the request is rendered a second time from a copy of the example whose gold answer
(final assistant message and target) is replaced by a canary; the two renders must be identical. Unless
rationalize=True, any difference means the teacher's input depends on the gold answer: a DataError.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example
from vlmtune.errors import ConfigError, DataError
from vlmtune.infer.remote import ChatRequest
from vlmtune.tasks.base import Task

BUILTIN = ("reminder", "reasoning", "reminder_base")
CANARY = "zqx-canary-4417"


@dataclass
class Template:
    """A loaded teacher template."""

    name: str
    source: str
    version: str
    block: str
    stop: list[str] = field(default_factory=list)
    rationalize: bool = False
    _jinja: Any = field(default=None, repr=False, compare=False)

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{self.name}-v{self.version}+{self.sha}" + ("+rationalize" if self.rationalize else "")

    def _compiled(self, strict: bool = True) -> Any:
        from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined if strict else Undefined)
        try:
            return env.from_string(self.source)
        except TemplateSyntaxError as e:
            raise ConfigError(f"teacher template {self.name}: line {e.lineno}: {e.message}") from None

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The teacher's messages for one example (system and user), placeholders for its images included."""
        from jinja2 import UndefinedError

        if self._jinja is None:  # compiled once: compiling costs far more than rendering
            self._jinja = self._compiled()
        tpl = self._jinja
        ctx = context_of(example, rationalize=self.rationalize)
        out = []
        for role in ("system", "user"):
            if role not in tpl.blocks:
                continue
            try:
                text = "".join(tpl.blocks[role](tpl.new_context(ctx))).strip()
            except UndefinedError as e:
                hint = " (gold_answer exists only with teach.rationalize=true)" if "gold_answer" in str(e) else ""
                raise ConfigError(f"teacher template {self.name}: {e}{hint}") from None
            if text:
                out.append({"role": role, "content": text})
        n = sum(m["content"].count(IMAGE_TOKEN) for m in out)
        if n != len(example.images):
            raise ConfigError(
                f"teacher template {self.name} places {n} {IMAGE_TOKEN} placeholder(s) for example "
                f"'{example.id}', which has {len(example.images)} image(s). Fix: put {{{{ images }}}} in "
                "its user block"
            )
        return out

    def request(
        self, example: Example, params: dict[str, Any], messages: list[dict[str, str]] | None = None
    ) -> ChatRequest:
        """The ChatRequest for one example (`messages`: already rendered ones, e.g. by check_teacher_input)."""
        p = dict(params)
        if self.stop:
            p["stop"] = list(self.stop)
        return ChatRequest(
            messages=tuple(messages or self.messages(example)), images=tuple(example.images), params=p, tag=self.tag
        )


def load_template(name_or_path: str, *, rationalize: bool = False) -> Template:
    """A shipped template by name, or a Jinja2 file of yours."""
    if name_or_path in BUILTIN:
        source = (resources.files("vlmtune.teacher") / "templates" / f"{name_or_path}.j2").read_text("utf-8")
        name = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"teacher template '{name_or_path}' is neither a shipped one ({', '.join(BUILTIN)}) nor "
                "a file. Fix: teach.prompt=reminder, or the path of a Jinja2 file with a user block"
            )
        source, name = path.read_text(encoding="utf-8"), path.stem
    tpl = Template(name=name, source=source, version="0", block="reminder", rationalize=rationalize)
    module = tpl._compiled(strict=False).module  # its top-level settings (version, block, stop)
    tpl.version = str(getattr(module, "version", "0"))
    tpl.block = str(getattr(module, "block", "reminder"))
    stop = getattr(module, "stop", [])
    tpl.stop = [str(s) for s in stop] if isinstance(stop, (list, tuple)) else [str(stop)]
    if "user" not in tpl._compiled().blocks:
        raise ConfigError(f"teacher template {name} has no {{% block user %}}: the teacher would be asked nothing")
    return tpl


def _question_of(text: str) -> tuple[str, str]:
    """(lines before the question, the question): the question is the last non-empty line."""
    lines = [ln for ln in text.replace(IMAGE_TOKEN, "").strip().splitlines() if ln.strip()]
    if not lines:
        return "", ""
    return "\n".join(lines[:-1]).strip(), lines[-1].strip()


def context_of(example: Example, *, rationalize: bool = False) -> dict[str, Any]:
    """The template context of one example (see the module docstring). Built from prompt_messages() only."""
    msgs = [m for m in example.prompt_messages() if m["role"] != "system"]
    ctx_lines, history, pending = "", [], None
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            before, q = _question_of(m["content"])
            if i == 0:
                ctx_lines = before
            elif before:
                q = f"{before} {q}"
            pending = q
        elif pending is not None:
            history.append({"question": pending, "answer": m["content"].strip()})
            pending = None
    question = pending or ""
    conversation = "\n".join([f"Q: {h['question']}\nA: {h['answer']}" for h in history] + [f"Q: {question}"])
    ctx: dict[str, Any] = {
        "images": f"{IMAGE_TOKEN}\n" * len(example.images),
        "context": ctx_lines,
        "history": history,
        "question": question,
        "conversation": conversation,
    }
    if rationalize:
        ctx["gold_answer"] = gold_answer(example)
    return ctx


def gold_answer(example: Example) -> str:
    """The asked round's gold answer as text: the final assistant message, else the target."""
    text = example.answer_text()
    if text is not None:
        return text
    t = example.target
    return str(t.get("answer") if isinstance(t, dict) and "answer" in t else t)


def _with_canary(example: Example) -> Example:
    ex = dataclasses.replace(
        example, messages=[dict(m) for m in example.messages], target=copy.deepcopy(example.target)
    )
    if ex.messages and ex.messages[-1]["role"] == "assistant":
        ex.messages[-1]["content"] = CANARY
    if isinstance(ex.target, dict) and "answer" in ex.target:
        ex.target["answer"] = CANARY
    else:
        ex.target = CANARY
    return ex


def check_teacher_input(tpl: Template, example: Example, task: Task) -> list[dict[str, str]]:
    """The teacher's messages for `example`, after checking that they do not depend on its gold answer."""
    task.check_example(example)
    messages = tpl.messages(example)
    if not tpl.rationalize:
        probe = tpl.messages(_with_canary(example))
        if probe != messages:
            raise DataError(
                f"example '{example.id}': the teacher's input for template {tpl.name} depends on the "
                "asked round's gold answer",
                field="messages",
                fix="the teacher sees the dialogue up to the question only; use teach.rationalize=true "
                "to give it the gold answer on purpose",
            )
    return messages
