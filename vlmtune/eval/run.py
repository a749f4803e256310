"""Model x dataset -> an evaluation directory: predictions.jsonl, metrics.json, fingerprint.json.

    evaluate(model, processor, examples, task, "runs/q/zero_shot", label="zero-shot", ref=ref, ecfg=cfg.eval)
    evaluate_with(backend, examples, task, out_dir, label="...", ecfg=ecfg)   # any Backend (eval.backend)

Decoding is greedy and deterministic; the prompt is the example's conversation without its final
answer, rendered by the model's own chat template. The fingerprint records everything that changes
scores, so `compare` can refuse unfair comparisons. Who answers is a `Backend`: `HFBackend` (eval.backend=hf,
a model vlmtune loaded) or `vlmtune.eval.remote.RemoteBackend` (eval.backend=openai, an OpenAI-compatible
server); prompts, parsing, metrics, intervals and the evaluation directory are the same for both. The same
`write_evaluation` scores answers made elsewhere (`vlmtune score`, `vlmtune.eval.external`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vlmtune.config import EvalConfig
from vlmtune.data.example import Example, atomic_write_json, atomic_write_text
from vlmtune.distributed import is_main_process, sharded
from vlmtune.errors import ConfigError
from vlmtune.infer.generate import generate
from vlmtune.models.load import ModelRef, chat_template_of, dir_hash, text_hash
from vlmtune.processing import Model, Processor, prompt_text
from vlmtune.tasks.base import LOGLIK, Task, options_dict

log = logging.getLogger(__name__)

MODES = ("generate", "loglik", "both")
GREEDY_DECODING = {"strategy": "greedy", "do_sample": False, "num_beams": 1}


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("vlmtune", "torch", "transformers", "peft"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def data_hash(examples: list[Example]) -> str:
    """Hash of the evaluated records (ids, prompts, targets); image bytes are covered by their paths' content."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(
            json.dumps(
                [ex.id, ex.prompt_messages(), ex.target, ex.options], sort_keys=True, ensure_ascii=False, default=str
            ).encode()
        )
        for p in ex.images:
            h.update(Path(p).read_bytes() if Path(p).exists() else p.encode())
    return h.hexdigest()[:16]


def image_size_of(processor: Processor) -> Any:
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return None
    return getattr(ip, "crop_size", None) or getattr(ip, "size", None)


def fingerprint(
    *,
    ref: ModelRef,
    adapter: str | None,
    processor: Processor,
    task: Task,
    examples: list[Example],
    decoding: dict[str, Any],
    backend: str = "transformers",
) -> dict[str, Any]:
    prompts = "\n".join(prompt_text(processor, ex) for ex in examples[:50])
    return assemble_fingerprint(
        {"model": ref.name, "model_hash": dir_hash(ref.path), "adapter": adapter, "adapter_hash": dir_hash(adapter)},
        {
            "prompt_hash": text_hash(prompts),
            "chat_template_hash": text_hash(chat_template_of(processor)),
            "image_size": image_size_of(processor),
        },
        task=task,
        examples=examples,
        decoding=decoding,
        backend=backend,
    )


def assemble_fingerprint(
    who: dict[str, Any],
    rendering: dict[str, Any],
    *,
    task: Task,
    examples: list[Example],
    decoding: dict[str, Any],
    backend: str,
    versions: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """fingerprint.json: who answered (model, model_hash, adapter, adapter_hash), the task and data, how prompts were
    rendered (prompt_hash, chat_template_hash, image_size), decoding, backend, and `extra` (a server's report)."""
    return {
        **who,
        "task": task.name,
        "task_options": options_dict(task),
        "n": len(examples),
        "data_hash": data_hash(examples),
        **rendering,
        "decoding": decoding,
        "backend": backend,
        **(extra or {}),
        "versions": versions or library_versions(),
    }


def options_for(task: Task, ex: Example) -> list[str]:
    """The closed answer set of an example, as the strings an answer is written as: the task's rendering of
    the options when it has one (mcq: "B) ..."), else the example's own options, else the task's default set."""
    if ex.options:
        return [str(o) for o in (task.answer_texts(ex) or ex.options)]
    opts = task.default_options(ex)
    if not opts:
        raise ConfigError(
            f"eval.mode=loglik needs a closed answer set, but example '{ex.id}' has no 'options' and "
            f"task '{task.name}' defines none; use eval.mode=generate"
        )
    return [str(o) for o in opts]


def best_option(options: list[str], scores: list[float]) -> str:
    """The option with the highest score (the first of equal ones)."""
    return options[max(range(len(scores)), key=scores.__getitem__)]


@dataclass
class Answers:
    """What a system answered: raw texts (one per example) and, when options were scored, their scores and where
    they came from (`scores_from`: "loglik" for the model's log-likelihoods, or e.g. "VisDial ranks in sub.json")."""

    texts: list[str]
    scores: list[list[float]] | None = None
    scores_from: str = LOGLIK


@dataclass
class EvalRecord:
    """Who answered and how: written into metrics.json and fingerprint.json next to the scores."""

    label: str
    model: str
    adapter: str | None
    mode: str
    decoding: dict[str, Any]
    fingerprint: dict[str, Any]
    seconds: float = 0.0
    order_check: dict[str, Any] | None = field(default=None)
    files: dict[str, Any] = field(default_factory=dict)  # more JSON files for the evaluation directory (remote.json)


class Backend(Protocol):
    """Who answers an evaluation (eval.backend). `generate` and `score` run on every process of a launcher when
    `shard` is true (each answers its share); the order check calls `generate` on rank 0 alone (`shard=False`)."""

    model_name: str
    adapter: str | None
    decoding: dict[str, Any]  # what decoding.* records besides greedy and max_new_tokens
    option_scoring: str  # how option scores are made, as decoding.option_scoring says

    def generate(self, examples: list[Example], ecfg: EvalConfig, desc: str, *, shard: bool = True) -> list[str]: ...

    def score(self, examples: list[Example], options: list[list[str]], ecfg: EvalConfig) -> list[list[float]]: ...

    def fingerprint(self, task: Task, examples: list[Example], decoding: dict[str, Any]) -> dict[str, Any]: ...

    def files(self) -> dict[str, Any]: ...


class HFBackend:
    """eval.backend=hf: a model vlmtune loaded answers with batched greedy `generate` and `score_options`."""

    decoding: dict[str, Any] = {}
    option_scoring = "sum of option-token log-probabilities (shared prompt computed once)"

    def __init__(self, model: Model, processor: Processor, ref: ModelRef, adapter: str | None = None):
        self.model, self.processor, self.ref, self.adapter = model, processor, ref, adapter
        self.model_name = ref.name

    def generate(self, examples: list[Example], ecfg: EvalConfig, desc: str, *, shard: bool = True) -> list[str]:
        def run(idx: list[int]) -> list[str]:
            return generate(
                self.model,
                self.processor,
                [examples[i] for i in idx],
                batch_size=ecfg.batch_size,
                max_new_tokens=ecfg.max_new_tokens,
                desc=desc,
            )

        return sharded(run, len(examples)) if shard else run(list(range(len(examples))))

    def score(self, examples: list[Example], options: list[list[str]], ecfg: EvalConfig) -> list[list[float]]:
        from vlmtune.infer.score import score_options

        return sharded(
            lambda idx: score_options(
                self.model,
                self.processor,
                [examples[i] for i in idx],
                [options[i] for i in idx],
                batch_size=ecfg.batch_size,
            ),
            len(examples),
        )

    def fingerprint(self, task: Task, examples: list[Example], decoding: dict[str, Any]) -> dict[str, Any]:
        return fingerprint(
            ref=self.ref,
            adapter=self.adapter,
            processor=self.processor,
            task=task,
            examples=examples,
            decoding=decoding,
        )

    def files(self) -> dict[str, Any]:
        return {}


def answer(backend: Backend, examples: list[Example], task: Task, ecfg: EvalConfig, label: str) -> Answers:
    """Generate and/or score every example (sharded across a launcher's processes)."""
    texts: list[str] = []
    scores: list[list[float]] | None = None
    if ecfg.mode in ("generate", "both"):
        texts = backend.generate(examples, ecfg, f"eval {label}")
    if ecfg.mode in ("loglik", "both"):
        options = [options_for(task, ex) for ex in examples]
        scores = backend.score(examples, options, ecfg)
        if ecfg.mode == "loglik":
            texts = [best_option(opts, sc) for opts, sc in zip(options, scores)]
    return Answers(texts, scores)


def evaluate(
    model: Model,
    processor: Processor,
    examples: list[Example],
    task: Task,
    out_dir: str | Path,
    *,
    label: str,
    ref: ModelRef,
    ecfg: EvalConfig,
    adapter: str | None = None,
) -> dict[str, Any]:
    """Answer with a loaded model (eval.backend=hf), parse and score every example; write the evaluation
    directory; return metrics.json's content (see `evaluate_with`)."""
    return evaluate_with(HFBackend(model, processor, ref, adapter), examples, task, out_dir, label=label, ecfg=ecfg)


def evaluate_with(
    backend: Backend, examples: list[Example], task: Task, out_dir: str | Path, *, label: str, ecfg: EvalConfig
) -> dict[str, Any]:
    """Answer with `backend`, parse and score every example; write the evaluation directory; return metrics.json's
    content.

    ecfg.mode: generate (greedy generation, parsed by the task) | loglik (the option with the highest
    log-likelihood is the answer: no parse failures) | both (generation answers; option scores are recorded
    too, for ranking metrics such as VisDial's).
    """
    if ecfg.mode not in MODES:
        raise ConfigError(f"eval.mode is '{ecfg.mode}'; choose one of {', '.join(MODES)}")
    t0 = time.time()
    for ex in examples:  # e.g. dialog: the asked round's gold answer must not be in the input
        task.check_example(ex.as_written())
    answers = answer(backend, examples, task, ecfg, label)
    decoding = {**GREEDY_DECODING, **backend.decoding, "max_new_tokens": ecfg.max_new_tokens}
    if ecfg.mode != "generate":
        decoding["option_scoring"] = backend.option_scoring
    if not is_main_process():
        return {}  # under a launcher every rank answered its share; rank 0 scores and writes

    def ask(batch: list[Example]) -> list[str]:  # the same questions again, for the task's order check
        return backend.generate(batch, ecfg, f"eval {label} (reordered)", shard=False)

    order = task.order_check(examples, ask, n_boot=ecfg.n_boot, seed=0)
    fp = backend.fingerprint(task, examples, {**decoding, "mode": ecfg.mode})
    record = EvalRecord(
        label=label,
        model=backend.model_name,
        adapter=backend.adapter,
        mode=ecfg.mode,
        decoding=decoding,
        fingerprint=fp,
        seconds=time.time() - t0,
        order_check=order,
        files=backend.files(),
    )
    return write_evaluation(task, examples, answers, out_dir, record, n_boot=ecfg.n_boot)


def prediction_rows(task: Task, examples: list[Example], answers: Answers) -> list[dict[str, Any]]:
    """One prediction row per example (the format is in vlmtune/tasks/base.py)."""
    rows = []
    for i, (ex, text) in enumerate(zip(examples, answers.texts)):
        parsed = task.parse(text, ex)
        row = {
            "id": ex.id,
            "prediction": text,
            "parsed": parsed.value,
            "parse_ok": parsed.ok,
            "target": ex.target,
            "correct": bool(parsed.ok and task.correct(parsed.value, ex)),
            "images": list(ex.images),
            "prompt": ex.prompt_messages()[-1]["content"],
            "group": ex.group or ex.id,
        }
        if answers.scores is not None:
            row["scores"] = answers.scores[i]
            row["scores_from"] = answers.scores_from
        if "memory" in ex.meta:  # the retrieved items and their score parts (vlmtune.memory.reminder.inject)
            row["memory"] = ex.meta["memory"]
        row.update({k: v for k, v in task.row_extras(ex).items() if k not in row})
        rows.append(row)
    return rows


def write_evaluation(
    task: Task,
    examples: list[Example],
    answers: Answers,
    out_dir: str | Path,
    record: EvalRecord,
    *,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Parse and score answers (model outputs or predictions made elsewhere) and write the evaluation directory."""
    out = Path(out_dir)
    rows = prediction_rows(task, examples, answers)
    metrics = task.metrics(rows, n_boot=n_boot, seed=0)
    if answers.scores is not None and record.mode == "both":
        # A closed set scored both ways: what the option scores add (e.g. loglik_accuracy), labelled by mode.
        options = [options_for(task, ex) for ex in examples]
        metrics.update(task.option_metrics(rows, examples, options, n_boot=n_boot, seed=0))
    if record.order_check is not None:
        metrics.update(record.order_check.get("metrics", {}))
        atomic_write_json(out / "order_check.json", {k: v for k, v in record.order_check.items() if k != "metrics"})
    for name, content in record.files.items():
        atomic_write_json(out / name, content)
    result = {
        "task": task.name,
        "task_options": options_dict(task),
        "label": record.label,
        "model": record.model,
        "adapter": record.adapter,
        "n": len(rows),
        "mode": record.mode,
        "decoding": record.decoding,
        "seconds": round(record.seconds, 2),
        "metrics": metrics,
    }
    atomic_write_text(
        out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    )
    atomic_write_json(out / "fingerprint.json", record.fingerprint)
    atomic_write_json(out / "metrics.json", result)  # written last: its presence marks the evaluation complete
    key = task.headline(metrics)
    head = metrics.get(key, {})
    if isinstance(head, dict) and "value" in head:
        log.info(
            f"[eval] {record.label} ({record.mode}): {key} {head['value']:.3f} "
            f"(95% CI {head['ci'][0]:.3f}-{head['ci'][1]:.3f}), n={len(rows)}, "
            f"parse failures {sum(not r['parse_ok'] for r in rows)} -> {out}"
        )
    return result
