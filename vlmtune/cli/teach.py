"""The teach verb: a teacher model writes <reminder> training targets, cached, filtered and reported."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmtune.cli.common import Verb, key_values, task_option_arg


def cmd_teach(a: argparse.Namespace) -> int:
    """Have a teacher write `<reminder>...</reminder>` + answer targets for a JSONL file; filter; export.

    Writes OUT/data.jsonl (training examples, provenance in meta.teacher), OUT/teach_report.md and .html (counts
    per filter, rejected outputs) and OUT/teach.json. Responses are cached (rerunning sends only what is missing;
    changing only the filters sends nothing). Offline, on CPU, with the local backend over gemma3-270m
    (a text-only base model: a weak teacher, most outputs are rejected; the gemma extra):

    Example: vlmtune data synth --task dialog --n 16 --out data/dialog16
             vlmtune teach data/dialog16/data.jsonl --backend local --model gemma3-270m --prompt reminder_base --max-tokens 48 --out runs/teach-demo
             vlmtune teach data/dialog16/data.jsonl --backend openai --base-url http://localhost:11434/v1 --model gemma3:27b --out runs/teach-ollama
    """
    from vlmtune.config import RunConfig, TeachConfig, coerce_fields, validate
    from vlmtune.data.example import load_jsonl
    from vlmtune.registry import TASKS
    from vlmtune.tasks import build_task
    from vlmtune.teacher.run import teach

    examples = load_jsonl(a.data, known_tasks=TASKS.names())
    task = build_task(
        a.task or (examples[0].task if examples else "dialog"), key_values(a.task_option, "--task-option")
    )
    values = {
        k: v
        for k, v in {
            "target": a.target,
            "backend": a.backend,
            "model": a.model,
            "base_url": a.base_url,
            "prompt": a.prompt,
            "max_tokens": a.max_tokens,
            "concurrency": a.concurrency,
            "cache": a.cache,
        }.items()
        if v is not None
    }
    values.update(key_values(a.set, "--set"))
    filters = key_values(a.filter, "--filter")
    if filters:
        values["filters"] = {**values.get("filters", {}), **filters}
    tcfg = TeachConfig(**coerce_fields(TeachConfig, values, "teach"))
    validate(RunConfig(teach=tcfg))
    out = Path(a.out)
    result = teach(examples, task, tcfg, out)
    c = result.counts
    print(
        f"[teach] {c['accepted']} of {c['examples']} accepted -> {out / 'data.jsonl'} "
        f"(report: {out / 'teach_report.md'}); {result.summary.line()}"
    )
    return 0


def add_verbs(verb: Verb) -> None:
    p = verb("teach", cmd_teach, "a teacher model writes <reminder> training targets (cached, filtered)")
    p.add_argument("data", help="JSONL of training examples (each ends with its gold answer)")
    p.add_argument("--out", required=True, help="output directory (data.jsonl, teach_report.md/.html, teach.json)")
    p.add_argument("--task", help="task name (default: the records' task)")
    p.add_argument(
        "--target",
        choices=["reminder+gold", "reminder+teacher"],
        default="reminder+gold",
        help="what the exported assistant target holds after the teacher's block (default: reminder+gold)",
    )
    p.add_argument("--backend", choices=["openai", "local"], help="openai (an endpoint) or local (offline)")
    p.add_argument("--model", help="the teacher (endpoint model name, or a vlmtune model name for local)")
    p.add_argument("--base-url", help="the OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (Ollama)")
    p.add_argument("--prompt", help="reminder | reasoning | reminder_base | a Jinja2 file")
    p.add_argument("--max-tokens", type=int, help="the teacher's answer budget")
    p.add_argument("--concurrency", type=int, help="requests in flight (openai)")
    p.add_argument("--cache", help="the response cache file (default: $VLMTUNE_CACHE/teacher/<model>.jsonl)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="key=value",
        help="any teach.* setting (`vlmtune ls` lists them), e.g. --set rpm=60 --set temperature=0.7",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="key=value",
        help="a filter bound, e.g. --filter min_relevance=0.5 --filter language=ko",
    )
    task_option_arg(p)
