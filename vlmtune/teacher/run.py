"""Ask the teacher, filter its outputs, export training examples: the `vlmtune teach` job.

    result = teach(examples, task, tcfg, out_dir)      # writes out_dir/{data.jsonl, teach.json, teach_report.*}
    result.examples                                     # the exported Examples (training targets replaced)

Steps: every example's teacher input is rendered from its template and checked (prompts.check_teacher_input);
the backend answers (from the cache where it can); each output is parsed and filtered (filters.py); the
export is built from the source examples, the cached responses and the filters alone, so two exports of the
same inputs are byte-identical, and changing only the filters sends no request.

Export (teach.target):
  reminder+gold     assistant target = "<reminder>{teacher's block}</reminder>\\n{gold answer}"
  reminder+teacher  assistant target = "<reminder>{teacher's block}</reminder>\\n{teacher's answer}"
(`reasoning` templates write <reasoning> instead). `target` (the structured gold) is unchanged. meta["teacher"]
records the provenance: backend, model, template tag and hash, request key, and whether the output was
accepted; a rejected example is kept with its gold-only target (teach.on_reject=gold) or left out (drop).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.config import TeachConfig
from vlmtune.data.example import Example, atomic_write_json, write_jsonl
from vlmtune.errors import ConfigError, DataError
from vlmtune.infer.remote import ChatResponse, Summary
from vlmtune.paths import teacher_cache
from vlmtune.tasks.base import Task
from vlmtune.teacher.filters import CHECKS, FilterConfig, Output, Verdict, check, mark_duplicates, parse_output
from vlmtune.teacher.prompts import Template, check_teacher_input, gold_answer, load_template

log = logging.getLogger(__name__)


@dataclass
class Judged:
    """One source example with its teacher output and the filters' verdict."""

    example: Example
    key: str
    response: ChatResponse
    output: Output
    verdict: Verdict

    @property
    def accepted(self) -> bool:
        return not self.verdict.reasons


@dataclass
class TeachResult:
    examples: list[Example]
    judged: list[Judged]
    counts: dict[str, Any]
    summary: Summary
    template: Template
    model_id: str
    out_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)


def later_rounds(examples: list[Example], task: Task) -> dict[str, list[dict[str, Any]]]:
    """Dialogue id -> its rounds known from the data [{round, question, answer}] (for the future-leakage check)."""
    rounds: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for ex in examples:
        pos = task.round_of(ex)
        if pos is None:
            continue
        question = (ex.meta or {}).get("question") or ex.prompt_messages()[-1]["content"].splitlines()[-1]
        rounds[pos[0]][pos[1]] = {"round": pos[1], "question": str(question), "answer": gold_answer(ex)}
    return {d: [r[k] for k in sorted(r)] for d, r in rounds.items()}


def judge(
    examples: list[Example], responses: list[ChatResponse], task: Task, tpl: Template, fcfg: FilterConfig
) -> list[Judged]:
    """Parse and filter every response (pure: the same inputs give the same verdicts)."""
    dialogues = later_rounds(examples, task)
    judged = []
    for ex, resp in zip(examples, responses):
        pos = task.round_of(ex)
        later = [r for r in dialogues.get(pos[0], []) if r["round"] > pos[1]] if pos else []
        if not resp.ok:
            out = parse_output("", tpl.block)
            verdict = Verdict(["finish"], {"finish": f"no answer: {resp.error}"})
        else:
            out = parse_output(resp.text or "", tpl.block)
            verdict = check(out, resp.finish_reason, resp.input_truncated, ex, task, later, fcfg)
        judged.append(Judged(ex, resp.key, resp, out, verdict))
    mark_duplicates([(j.key, j.output, j.verdict) for j in judged], fcfg)
    return judged


def export(judged: list[Judged], tcfg: TeachConfig, tpl: Template, model_id: str) -> list[Example]:
    """Training examples from the judged outputs (see the module docstring)."""
    out = []
    for j in judged:
        ex = j.example
        prov = {
            "backend": tcfg.backend,
            "model": model_id,
            "template": tpl.tag,
            "template_hash": tpl.sha,
            "key": j.key,
            "target": tcfg.target,
            "accepted": j.accepted,
        }
        if not j.accepted:
            if tcfg.on_reject == "drop":
                continue
            prov["rejected"] = list(j.verdict.reasons)
            out.append(dataclasses.replace(ex, meta={**ex.meta, "teacher": prov}))
            continue
        answer = gold_answer(ex) if tcfg.target == "reminder+gold" else j.output.answer
        content = f"<{tpl.block}>{j.output.block}</{tpl.block}>\n{answer}"
        messages = ex.prompt_messages() + [{"role": "assistant", "content": content}]
        out.append(dataclasses.replace(ex, messages=messages, meta={**ex.meta, "teacher": prov}))
    return out


def counts_of(judged: list[Judged], summary: Summary) -> dict[str, Any]:
    per = {c: sum(c in j.verdict.reasons for j in judged) for c in CHECKS}
    first = {c: sum(bool(j.verdict.reasons) and j.verdict.reasons[0] == c for j in judged) for c in CHECKS}
    return {
        "examples": len(judged),
        "accepted": sum(j.accepted for j in judged),
        "rejected": sum(not j.accepted for j in judged),
        "failed_by_check": per,
        "first_failed_check": first,
        "requests": dataclasses.asdict(summary),
    }


def teach(examples: list[Example], task: Task, tcfg: TeachConfig, out_dir: str | Path | None = None) -> TeachResult:
    """Run the teacher over `examples` and export training examples (written to out_dir when given)."""
    from vlmtune.teacher.backends import make_backend

    if tcfg.target == "none":
        raise ConfigError("teach.target is 'none': choose reminder+gold or reminder+teacher")
    if not examples:
        raise DataError("no examples to teach", fix="give a JSONL file with at least one record")
    fcfg = FilterConfig.of(tcfg.filters)
    tpl = load_template(tcfg.prompt, rationalize=tcfg.rationalize)
    params = {"temperature": tcfg.temperature, "max_tokens": tcfg.max_tokens, "seed": tcfg.seed}
    requests = []
    for ex in examples:
        if ex.answer_text() is None:
            raise DataError(
                f"example '{ex.id}' has no gold answer (a final assistant message) to train on",
                field="messages",
                fix="teach training examples: each ends with the gold answer",
            )
        requests.append(tpl.request(ex, params, check_teacher_input(tpl, ex, task)))
    backend = make_backend(tcfg, tcfg.cache or teacher_cache(tcfg.model))
    responses = backend.run(requests, desc="teacher")
    judged = judge(examples, responses, task, tpl, fcfg)
    result = TeachResult(
        export(judged, tcfg, tpl, backend.model_id),
        judged,
        counts_of(judged, backend.summary),
        backend.summary,
        tpl,
        backend.model_id,
    )
    c = result.counts
    log.info(
        f"[teach] {c['accepted']} of {c['examples']} outputs accepted; rejected by check: "
        + ", ".join(f"{k} {v}" for k, v in c["failed_by_check"].items() if v)
    )
    if out_dir is not None:
        write_outputs(result, tcfg, Path(out_dir))
    return result


def write_outputs(result: TeachResult, tcfg: TeachConfig, out: Path) -> None:
    from vlmtune.data.example import atomic_write_text
    from vlmtune.teacher.report import render_html, render_markdown

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "data.jsonl", result.examples)
    atomic_write_text(out / "teach_report.md", render_markdown(result, tcfg))
    atomic_write_text(out / "teach_report.html", render_html(result, tcfg))
    atomic_write_json(
        out / "teach.json",
        {
            "model": result.model_id,
            "template": result.template.tag,
            "target": tcfg.target,
            "on_reject": tcfg.on_reject,
            "filters": dataclasses.asdict(FilterConfig.of(tcfg.filters)),
            **{k: v for k, v in result.counts.items() if k != "requests"},
        },
    )
    result.out_dir = out
    result.files = {n: str(out / n) for n in ("data.jsonl", "teach_report.md", "teach_report.html", "teach.json")}
