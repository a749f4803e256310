"""Verbs that evaluate and compare: eval, score, compare, predict."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmtune.cli.common import (
    Verb,
    config_flags,
    config_from_flags,
    key_values,
    model_args,
    model_config,
    task_option_arg,
)
from vlmtune.errors import ConfigError, DataError, VlmtuneError

REMOTE_FLAGS = [
    "backend",
    "endpoint",
    "api_key_env",
    "concurrency",
    "rpm",
    "tpm",
    "timeout",
    "max_retries",
    "context_tokens",
    "cache",
    "n_boot",
]


def cmd_eval(a: argparse.Namespace) -> int:
    """Evaluate a model (optionally with an adapter) on a JSONL test file, or the model an OpenAI-compatible
    server serves (--backend openai: vLLM, SGLang, Ollama, an API model, `vlmtune serve`).

    Example: vlmtune eval --model tiny --adapter runs/quickstart/adapter \\
                 --data runs/quickstart/data/test.jsonl --out runs/eval-ft
             vlmtune eval --model tiny --adapter runs/shapes-dialog-connector/connector \\
                 --data runs/shapes-dialog-connector/data/test.jsonl --out runs/eval-connector
             vlmtune eval --backend openai --endpoint http://localhost:8000/v1 --model tiny \\
                 --data runs/quickstart/data/test.jsonl --out runs/eval-served
    """
    from vlmtune.config import check_eval
    from vlmtune.data.example import load_jsonl
    from vlmtune.registry import TASKS
    from vlmtune.rundir import lock_if_in_run
    from vlmtune.tasks import build_task

    ecfg = config_from_flags(a, "eval")
    check_eval(ecfg)
    if ecfg.backend == "openai" and (a.adapter or a.load_in_4bit):
        raise ConfigError(
            "--adapter and --load-in-4bit load a model here (--backend hf); with --backend openai "
            "the server decides what it serves. Fix: serve the adapter (vLLM: --enable-lora "
            "--lora-modules NAME=DIR, then --model NAME; `vlmtune serve BASE --adapter DIR`)"
        )
    examples = load_jsonl(a.data, known_tasks=TASKS.names())
    if not examples:
        raise VlmtuneError(f"{a.data}: no records")
    task = build_task(a.task or examples[0].task, key_values(a.task_option, "--task-option"))
    out = Path(a.out or Path("runs") / f"eval-{Path(a.data).stem}")
    if ecfg.backend == "openai":
        from vlmtune.eval.remote import evaluate_remote

        with lock_if_in_run(out):
            evaluate_remote(examples, task, out, label=a.label, ecfg=ecfg)
        return 0
    from vlmtune.build import resolve_model
    from vlmtune.eval.run import evaluate
    from vlmtune.models.load import load_model

    a.model = a.model or "tiny"
    ref = resolve_model(model_config(a))
    if a.adapter and (Path(a.adapter) / "connector.json").exists():  # a memory connector, not a PEFT adapter
        from vlmtune.memory.connector import for_connector, load_for_eval

        model, processor = load_for_eval(ref, a.adapter)
        examples = for_connector(examples, a.adapter)
    else:
        model, processor = load_model(ref, adapter=a.adapter)
    with lock_if_in_run(out):
        evaluate(
            model,
            processor,
            examples,
            task,
            out,
            label=a.label or ("fine-tuned" if a.adapter else "base"),
            ref=ref,
            ecfg=ecfg,
            adapter=a.adapter,
        )
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    """Score predictions made elsewhere with the same metrics (no model): text, option scores, or VisDial ranks.

    Example: vlmtune score --task count --data runs/quickstart/data/test.jsonl \
                 --predictions runs/quickstart/finetuned/predictions.jsonl --out runs/rescored
    """
    from vlmtune.data.example import load_jsonl
    from vlmtune.eval.external import score_predictions
    from vlmtune.registry import TASKS
    from vlmtune.rundir import lock_if_in_run
    from vlmtune.tasks import build_task

    examples = load_jsonl(a.data, known_tasks=TASKS.names(), check_images=False)
    out = Path(a.out or Path("runs") / f"score-{Path(a.predictions).stem}")
    task = build_task(a.task, key_values(a.task_option, "--task-option"))
    with lock_if_in_run(out):
        score_predictions(task, examples, a.predictions, out, label=a.label)
    print(f"[score] wrote {out}/metrics.json")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """Compare evaluations of the same examples: metrics with CIs (method, n, groups), McNemar (exact and clustered),
    paired bootstraps, Holm-adjusted p-values, the minimum detectable difference, flipped examples. Two directories:
    baseline then candidate; three or more: every pair (or each against --reference).

    Example: vlmtune compare runs/quickstart/zero_shot runs/quickstart/finetuned --out runs/cmp
    Example: vlmtune compare runs/teach-a/finetuned runs/teach-b/finetuned runs/teach-c/finetuned \\
                 --label "(a) gold" --label "(b) reminder + gold" --label "(c) teacher" --out runs/teach-abc
    """
    from vlmtune.report import compare_many, compare_runs, format_summary
    from vlmtune.train.trainer import load_history

    def eval_dir(p: str) -> Path:
        d = Path(p)
        if not (d / "metrics.json").exists() and (d / "finetuned" / "metrics.json").exists():
            print(f"[compare] {d} is a run directory; using its finetuned/ evaluation")
            return d / "finetuned"
        return d

    dirs = [eval_dir(p) for p in a.evals]
    if len(dirs) < 2:
        raise ConfigError("compare needs two evaluation directories (baseline, candidate) or more")
    labels = a.label or None
    if labels is not None and len(labels) != len(dirs):
        raise ConfigError(f"give one --label per evaluation: {len(dirs)} directories, {len(labels)} labels")
    if len(dirs) == 2:
        if a.reference is not None:
            raise ConfigError("--reference is for three or more evaluations; with two, the first is the baseline")
        history = load_history(dirs[1].parent / "train_history.json") or None
        summary = compare_runs(dirs[0], dirs[1], a.out, history=history, allow_mismatch=a.allow_mismatch, labels=labels)
    else:
        summary = compare_many(
            dirs,
            a.out,
            labels=labels,
            reference=reference_index(a.reference, a.evals, labels),
            allow_mismatch=a.allow_mismatch,
        )
    print(format_summary(summary))
    return 0


def reference_index(ref: str | None, evals: list[str], labels: list[str] | None) -> int | None:
    """--reference as a position among the evaluations: a label, a directory as given, or a 1-based number."""
    if ref is None:
        return None
    for names in (labels or [], evals):
        if ref in names:
            return names.index(ref)
    if ref.isdigit() and 1 <= int(ref) <= len(evals):
        return int(ref) - 1
    raise ConfigError(
        f"--reference {ref!r} is none of the evaluations; give its --label, its directory as written, "
        f"or its position 1-{len(evals)}"
    )


def cmd_predict(a: argparse.Namespace) -> int:
    """Answer one question about one image.

    Example: vlmtune predict --model tiny --adapter runs/quickstart/adapter \\
                 --image runs/quickstart/data/source/images/count-000000.png --prompt "How many red shapes are there?"
    """
    from vlmtune.build import resolve_model
    from vlmtune.data.example import IMAGE_TOKEN, example_from_dict
    from vlmtune.infer.generate import generate
    from vlmtune.models.load import load_model
    from vlmtune.processing import load_image

    if a.image:  # a missing or broken image stops here, named, before the model is loaded
        try:
            load_image(a.image)
        except DataError as e:
            raise DataError(str(e).split(" Fix:")[0], field="--image", fix="give the path of an image file") from None
    # stdout carries only the answer, so it can be piped; logs go to stderr
    model, processor = load_model(resolve_model(model_config(a)), adapter=a.adapter)
    images = [a.image] if a.image else []
    content = (IMAGE_TOKEN + "\n" if a.image else "") + a.prompt
    ex = example_from_dict(
        {"id": "predict", "task": "predict", "images": images, "messages": [{"role": "user", "content": content}]},
        base_dir=Path.cwd(),
    )
    print(generate(model, processor, [ex], batch_size=1, max_new_tokens=a.max_new_tokens)[0])
    return 0


def add_verbs(verb: Verb) -> None:
    p = verb("eval", cmd_eval, "evaluate a model (or a served one: --backend openai) on a JSONL file")
    model_args(p)
    p.set_defaults(model=None)
    for action in p._actions:
        if action.dest == "model":
            action.help = (
                "hf: 'tiny', a local directory, or a hub id (default: tiny); openai: the name the "
                "server serves (default: the only model its /v1/models lists)"
            )
    p.add_argument("--data", required=True, help="JSONL test file (canonical format)")
    p.add_argument("--task", help="task name (default: the records' task)")
    p.add_argument("--out", help="output evaluation directory (default: runs/eval-<data stem>)")
    p.add_argument("--label", help="name shown in reports")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--mode",
        default="generate",
        choices=["generate", "loglik", "both"],
        help="generate answers, or pick the most likely option (closed sets), or both",
    )
    config_flags(p, "eval", REMOTE_FLAGS)
    task_option_arg(p)
    p = verb("score", cmd_score, "score a predictions file made elsewhere")
    p.add_argument("--task", required=True, help="task name (see `vlmtune ls`)")
    p.add_argument("--data", required=True, help="the JSONL file the predictions are for (gold answers)")
    p.add_argument(
        "--predictions",
        required=True,
        help="JSONL {id, prediction} or {id, scores}, or a VisDial submission JSON [{image_id, round_id, ranks}]",
    )
    p.add_argument("--out", help="output evaluation directory (default: runs/score-<predictions stem>)")
    p.add_argument("--label", help="name shown in reports")
    task_option_arg(p)
    p = verb("compare", cmd_compare, "compare two (or more) evaluations and write a report")
    p.add_argument(
        "evals",
        nargs="+",
        metavar="EVAL_DIR",
        help="evaluation directories of the same examples: baseline then candidate (e.g. runs/q/zero_shot "
        "runs/q/finetuned), or three or more, tested pairwise",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        help="the name of each evaluation in the report, in order (repeat it; default: metrics.json's labels)",
    )
    p.add_argument(
        "--reference",
        help="with three or more: test each evaluation against this one (its label, "
        "directory or 1-based position) instead of every pair",
    )
    p.add_argument("--out", default="runs/compare", help="where report.md/report.html go (default: runs/compare)")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare even if prompts/decoding/data differ (differences are listed in the report)",
    )
    p = verb("predict", cmd_predict, "answer one question about one image")
    model_args(p)
    p.add_argument("--image", help="an image file")
    p.add_argument("--prompt", required=True, help="the question")
