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


def evaluate(model, processor, examples: list[Example], task, out_dir: str | Path, *, label: str,
             model_name: str, model_path: str | None = None, adapter: str | None = None, batch_size: int = 32,
             max_new_tokens: int = 16, n_boot: int = 2000, progress: bool = True, log=print) -> dict[str, Any]:
    """Generate, parse and score every example; write the evaluation directory; return metrics.json's content."""
    out = Path(out_dir)
    t0 = time.time()
    texts = generate(model, processor, examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                     progress=progress, desc=f"eval {label}")
    rows = []
    for ex, text in zip(examples, texts):
        parsed = task.parse(text, ex)
        rows.append({"id": ex.id, "prediction": text, "parsed": parsed.value, "parse_ok": parsed.ok,
                     "target": ex.target, "correct": bool(parsed.ok and task.correct(parsed.value, ex)),
                     "images": list(ex.images), "prompt": ex.prompt_messages()[-1]["content"]})
    metrics = task.metrics(rows, n_boot=n_boot) if _takes_n_boot(task) else task.metrics(rows)
    decoding = {"strategy": "greedy", "do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens}
    result = {"task": task.name, "label": label, "model": model_name, "adapter": adapter, "n": len(rows),
              "mode": "generate", "decoding": decoding, "seconds": round(time.time() - t0, 2), "metrics": metrics}
    atomic_write_text(out / "predictions.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    atomic_write_json(out / "metrics.json", result)
    atomic_write_json(out / "fingerprint.json", fingerprint(
        model_name=model_name, model_path=model_path, adapter=adapter, processor=processor, task=task.name,
        examples=examples, decoding=decoding))
    acc = metrics.get("accuracy", {})
    if isinstance(acc, dict) and "value" in acc:
        log(f"[eval] {label}: accuracy {acc['value']:.3f} (95% CI {acc['ci'][0]:.3f}-{acc['ci'][1]:.3f}), "
            f"n={len(rows)}, parse failures {sum(not r['parse_ok'] for r in rows)} -> {out}")
    return result


def _takes_n_boot(task) -> bool:
    import inspect

    try:
        return "n_boot" in inspect.signature(task.metrics).parameters
    except (TypeError, ValueError):
        return False
