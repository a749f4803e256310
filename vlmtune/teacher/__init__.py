"""Teacher-written training targets (seed 001's "reminder" method), measured instead of trusted.

A teacher model reads the dialogue so far (never the asked round's gold answer) and writes
`<reminder>summary of the earlier turns and what the user asks now</reminder>` followed by an answer; the
student is trained to recall before it answers. `vlmtune teach` (or a recipe's `teach:` section, run before
training) asks the teacher through an OpenAI-compatible endpoint or a model vlmtune loads itself, caches every
response, filters the outputs (each check counted, rejected ones shown in a report) and exports canonical
Examples with the provenance in `meta["teacher"]`.

    prompts.py   versioned Jinja2 templates (reminder, reasoning, reminder_base, or yours); the gold-answer check
    backends.py  openai (vlmtune.infer.remote) | local (vlmtune's own loading and batched generation)
    filters.py   format, length, agreement, future leakage, grounding, language, duplicates
    run.py       teach(): render, check, ask, filter, export
    report.py    teach_report.md / teach_report.html
"""
