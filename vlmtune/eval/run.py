"""Model x dataset -> an evaluation directory: predictions.jsonl, metrics.json, fingerprint.json.

    evaluate(model, processor, examples, task, "runs/q/zero_shot", label="zero-shot", ...)

Decoding is greedy and deterministic; the prompt is the example's conversation without its final
answer, rendered by the model's own chat template. The fingerprint records everything that changes
scores, so `compare` can refuse unfair comparisons.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

from vlmtune.data.example import Example, atomic_write_json, atomic_write_text
from vlmtune.distributed import is_main_process, sharded
from vlmtune.errors import ConfigError
from vlmtune.infer.generate import generate, prompt_text
from vlmtune.models.load import chat_template_of, dir_hash, text_hash


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
        h.update(json.dumps([ex.id, ex.prompt_messages(), ex.target, ex.options], sort_keys=True,
                            ensure_ascii=False, default=str).encode())
        for p in ex.images:
            h.update(Path(p).read_bytes() if Path(p).exists() else p.encode())
    return h.hexdigest()[:16]


def image_size_of(processor) -> Any:
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return None
    return getattr(ip, "crop_size", None) or getattr(ip, "size", None)


def fingerprint(*, model_name: str, model_path: str | None, adapter: str | None, processor, task: str,
                examples: list[Example], decoding: dict[str, Any], backend: str = "transformers") -> dict[str, Any]:
    prompts = "\n".join(prompt_text(processor, ex) for ex in examples[:50])
    return {
        "model": model_name, "model_hash": dir_hash(model_path), "adapter": adapter, "adapter_hash": dir_hash(adapter),
        "task": task, "n": len(examples), "data_hash": data_hash(examples),
        "prompt_hash": text_hash(prompts), "chat_template_hash": text_hash(chat_template_of(processor)),
        "image_size": image_size_of(processor), "decoding": decoding, "backend": backend,
        "versions": library_versions(),
    }


MODES = ("generate", "loglik", "both")


def options_for(task, ex: Example) -> list[str]:
    """The closed answer set of an example, as the strings an answer is written as: the task's rendering of
    the options when it has one (mcq: "B) ..."), else the example's own options, else the task's default set."""
    if ex.options and hasattr(task, "answer_texts"):
        return [str(o) for o in task.answer_texts(ex)]
    opts = ex.options if ex.options else (task.default_options(ex) if hasattr(task, "default_options") else None)
    if not opts:
        raise ConfigError(f"eval.mode=loglik needs a closed answer set, but example '{ex.id}' has no 'options' and "
                          f"task '{task.name}' defines none; use eval.mode=generate")
    return [str(o) for o in opts]


def evaluate(model, processor, examples: list[Example], task, out_dir: str | Path, *, label: str,
             model_name: str, model_path: str | None = None, adapter: str | None = None, batch_size: int = 32,
             max_new_tokens: int = 16, n_boot: int = 2000, mode: str = "generate", permutations: int = 0,
             progress: bool = True, log=print) -> dict[str, Any]:
    """Answer, parse and score every example; write the evaluation directory; return metrics.json's content.

    mode: generate (greedy generation, parsed by the task) | loglik (the option with the highest
    log-likelihood is the answer: no parse failures) | both (generation answers; option scores are
    recorded too, for ranking metrics such as VisDial's).
    """
    if mode not in MODES:
        raise ConfigError(f"eval.mode is '{mode}'; choose one of {', '.join(MODES)}")
    out = Path(out_dir)
    t0 = time.time()
    if hasattr(task, "check_example"):  # e.g. dialog: the asked round's gold answer must not be in the input
        for ex in examples:
            task.check_example(ex)
    texts: list[str] = []
    scores: list[list[float]] | None = None
    if mode in ("generate", "both"):
        texts = sharded(lambda idx: generate(model, processor, [examples[i] for i in idx], batch_size=batch_size,
                                             max_new_tokens=max_new_tokens, progress=progress,
                                             desc=f"eval {label}"), len(examples))
    if mode in ("loglik", "both"):
        from vlmtune.infer.score import score_options

        options = [options_for(task, ex) for ex in examples]
        scores = sharded(lambda idx: score_options(model, processor, [examples[i] for i in idx],
                                                   [options[i] for i in idx], batch_size=batch_size,
                                                   progress=progress), len(examples))
        if mode == "loglik":
            texts = [opts[max(range(len(sc)), key=sc.__getitem__)] for opts, sc in zip(options, scores)]
    decoding = {"strategy": "greedy", "do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens}
    if mode != "generate":
        decoding["option_scoring"] = "sum of option-token log-probabilities (shared prompt computed once)"
    if not is_main_process():
        return {}  # under a launcher every rank answered its share; rank 0 scores and writes
    order = None
    if permutations > 0 and hasattr(task, "order_check"):
        # The same questions with the options shuffled: does the answer follow the option or its position?
        def answer(batch: list[Example]) -> list[str]:
            return generate(model, processor, batch, batch_size=batch_size, max_new_tokens=max_new_tokens,
                            progress=progress, desc=f"eval {label} (shuffled options)")

        order = task.order_check(examples, answer, n_perm=permutations, n_boot=n_boot)
    fp = fingerprint(model_name=model_name, model_path=model_path, adapter=adapter, processor=processor,
                     task=task.name, examples=examples, decoding={**decoding, "mode": mode})
    result = write_evaluation(task, examples, texts, scores, out, label=label, model_name=model_name,
                              adapter=adapter, mode=mode, decoding=decoding, fingerprint=fp, n_boot=n_boot,
                              seconds=time.time() - t0, log=log, order_check=order)
    return result


def write_evaluation(task, examples: list[Example], texts: list[str], scores: list[list[float]] | None,
                     out_dir: str | Path, *, label: str, model_name: str, adapter: str | None, mode: str,
                     decoding: dict[str, Any], fingerprint: dict[str, Any], n_boot: int = 2000, seconds: float = 0.0,
                     log=print, order_check: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse and score answers (model outputs or predictions made elsewhere) and write the evaluation directory."""
    out = Path(out_dir)
    rows = []
    for i, (ex, text) in enumerate(zip(examples, texts)):
        parsed = task.parse(text, ex)
        row = {"id": ex.id, "prediction": text, "parsed": parsed.value, "parse_ok": parsed.ok,
               "target": ex.target, "correct": bool(parsed.ok and task.correct(parsed.value, ex)),
               "images": list(ex.images), "prompt": ex.prompt_messages()[-1]["content"]}
        if scores is not None:
            row["scores"] = scores[i]
        if hasattr(task, "row_extras"):
            row.update({k: v for k, v in task.row_extras(ex).items() if k not in row})
        rows.append(row)
    metrics = task.metrics(rows, n_boot=n_boot) if _takes_n_boot(task) else task.metrics(rows)
    if scores is not None and mode == "both" and "r@1" not in metrics:
        # Closed set scored both ways: the generated answers give "accuracy", the best-scoring option
        # gives "loglik_accuracy" (no parse failures possible); the metrics say which is which.
        from vlmtune.eval.stats import bootstrap_ci, metric_entry

        hits = []
        for ex, sc in zip(examples, scores):
            best = options_for(task, ex)[max(range(len(sc)), key=sc.__getitem__)]
            p = task.parse(best, ex)
            hits.append(float(p.ok and task.correct(p.value, ex)))
        metrics["loglik_accuracy"] = metric_entry(sum(hits) / max(1, len(hits)), bootstrap_ci(hits, n_boot=n_boot),
                                                  len(hits))
        metrics["metric_modes"] = {"accuracy": "generate", "loglik_accuracy": "loglik"}
    if order_check is not None:
        metrics["order_consistency"] = order_check["consistency"]
        bias = order_check["position_bias"]
        metrics["position_bias"] = {"letters": bias["letters"], "proportions": bias["proportions"],
                                    "chi2": bias["chi2"], "p_value": bias["p_value"]}
        metrics["accuracy_by_ordering"] = order_check["accuracy_by_ordering"]
        atomic_write_json(out / "order_check.json", order_check)
    result = {"task": task.name, "label": label, "model": model_name, "adapter": adapter, "n": len(rows),
              "mode": mode, "decoding": decoding, "seconds": round(seconds, 2), "metrics": metrics}
    atomic_write_text(out / "predictions.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    atomic_write_json(out / "metrics.json", result)
    atomic_write_json(out / "fingerprint.json", fingerprint)
    acc = metrics.get("accuracy", {})
    if isinstance(acc, dict) and "value" in acc:
        log(f"[eval] {label} ({mode}): accuracy {acc['value']:.3f} (95% CI {acc['ci'][0]:.3f}-{acc['ci'][1]:.3f}), "
            f"n={len(rows)}, parse failures {sum(not r['parse_ok'] for r in rows)} -> {out}")
    return result


def _takes_n_boot(task) -> bool:
    import inspect

    try:
        return "n_boot" in inspect.signature(task.metrics).parameters
    except (TypeError, ValueError):
        return False
