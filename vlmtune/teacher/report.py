"""The teach report (Markdown and self-contained HTML): counts per check, tokens used, rejected examples shown.

md = render_markdown(result, tcfg); page = render_html(result, tcfg)
"""

from __future__ import annotations

import html
from typing import Any

from vlmtune.config import TeachConfig
from vlmtune.teacher.filters import CHECKS

SHOW_PER_CHECK = 8  # rejected examples shown under each check (the count is always the full one)
SHOW_ACCEPTED = 5
CAP = 300  # characters of a teacher output shown in a cell


def _cut(text: Any, cap: int = CAP) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= cap else s[: cap - 1] + "…"


def _question(j: Any) -> str:
    return j.example.prompt_messages()[-1]["content"].splitlines()[-1]


def sections(result: Any, tcfg: TeachConfig) -> list[tuple[str, list[str], list[list[str]] | None]]:
    """(title, paragraphs, table rows with a header first) for both renderings."""
    c = result.counts
    s = result.summary
    out: list[tuple[str, list[str], list[list[str]] | None]] = []
    out.append(
        (
            "Summary",
            [
                f"Teacher: {result.model_id} ({tcfg.backend}); template {result.template.tag}; target {tcfg.target}; "
                f"rejected examples: {'kept with their gold-only target' if tcfg.on_reject == 'gold' else 'left out'}.",
                f"{c['accepted']} of {c['examples']} outputs accepted ({c['rejected']} rejected).",
                f"Requests: {s.line()}.",
            ],
            None,
        )
    )
    rows = [["check", "failed", "first failed", "what it checks"]]
    what = {
        "finish": "finish_reason is stop; input not cut by the server",
        "format": "one closed block, no preamble, an answer after it",
        "length": "block and answer word bounds",
        "agreement": "the answer agrees with the gold (task scorer / dense relevance)",
        "future": "nothing from later rounds",
        "grounding": "the block says only what the dialogue says",
        "language": "expected script",
        "duplicate": "not the same output as another input's",
    }
    for k in CHECKS:
        rows.append([k, str(c["failed_by_check"][k]), str(c["first_failed_check"][k]), what[k]])
    out.append(
        ("Filters", ["An output may fail several checks; `first failed` counts each rejected output once."], rows)
    )
    for k in CHECKS:
        bad = [j for j in result.judged if k in j.verdict.reasons]
        if not bad:
            continue
        rows = [["id", "question", "teacher output", "why"]]
        rows += [
            [
                j.example.id,
                _question(j),
                _cut(j.response.text if j.response.ok else j.response.error),
                _cut(j.verdict.details.get(k, ""), 160),
            ]
            for j in bad[:SHOW_PER_CHECK]
        ]
        out.append((f"Rejected by {k} ({len(bad)})", [f"showing {min(len(bad), SHOW_PER_CHECK)} of {len(bad)}"], rows))
    good = [j for j in result.judged if j.accepted][:SHOW_ACCEPTED]
    if good:
        rows = [["id", "question", "gold", "teacher output"]]
        rows += [[j.example.id, _question(j), str(j.example.answer_text()), _cut(j.response.text)] for j in good]
        out.append(("Accepted (first few)", [], rows))
    return out


def render_markdown(result: Any, tcfg: TeachConfig) -> str:
    lines = ["# vlmtune teach report", ""]
    for title, paras, table in sections(result, tcfg):
        lines += [f"## {title}", ""] + [p + "\n" for p in paras]
        if table:
            cell = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines.append("| " + " | ".join(cell(x) for x in table[0]) + " |")
            lines.append("|" + "---|" * len(table[0]))
            lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in table[1:]]
            lines.append("")
    return "\n".join(lines)


def render_html(result: Any, tcfg: TeachConfig) -> str:
    e = html.escape
    body = []
    for title, paras, table in sections(result, tcfg):
        body.append(f"<h2>{e(title)}</h2>")
        body += [f"<p>{e(p)}</p>" for p in paras]
        if table:
            body.append("<table><tr>" + "".join(f"<th>{e(x)}</th>" for x in table[0]) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in r) + "</tr>" for r in table[1:]]
            body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;font-size:90%}th{background:#f3f3f3}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vlmtune teach report</title>"
        f"<style>{style}</style></head><body><h1>vlmtune teach report</h1>{''.join(body)}</body></html>\n"
    )
