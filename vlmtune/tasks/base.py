"""The task contract: a task turns a model's raw text into a structured answer and scores it.

A task is a small object with four things (compose by wrapping, no inheritance chains needed):

    name: str                                   # registry key, also Example.task
    parse(text, example) -> Parsed              # raw generation -> structured answer, or a counted failure
    correct(value, example) -> bool             # is a parsed answer right (exact match for closed sets)
    metrics(rows) -> dict                       # rows = prediction rows (below) -> metrics dict (below)

Optional, used when a task defines it:

    row_extras(example) -> dict                 # extra JSON-able fields merged into that example's
                                                # prediction row by the eval runner, so `metrics` can use
                                                # per-example facts the standard row lacks (e.g. "mcq"
                                                # adds "options" and "option_photo" for exact-match and
                                                # photo-level accuracy). Never overwrites standard keys;
                                                # `metrics` still returns every key without the extras
                                                # (NaN with n=0, and a note).

    check_example(example) -> None              # raise DataError if the example cannot be evaluated fairly
                                                # (e.g. dialog: round r's gold answer is in the model input);
                                                # the eval runner calls it on EVERY example before evaluating,
                                                # so a bad record stops the run instead of inflating a score.
                                                # The message names the example id (and round, for dialog).

    answer_texts(example) -> list[str]          # how each option is written as an answer (mcq: "B) ...");
                                                # log-likelihood scoring compares these strings
    default_options(example) -> list            # a closed answer set for examples without `options`
                                                # (count: 0..20), so eval.mode=loglik works for them too

    per_example(rows) -> {name: [float | None]}  # continuous per-example values (count: abs_error; dialog:
                                                # rougeL, reciprocal_rank); `compare` runs a paired bootstrap
                                                # on each over the examples defined in both runs

A prediction row (one per line of predictions.jsonl):
    {"id": str, "prediction": str (raw model text), "parsed": value or null, "parse_ok": bool,
     "target": gold value, "correct": bool, "images": [abs paths], "prompt": str (user text)}
    plus "scores": [one float per option] when the options were scored (eval.mode=loglik or both).

A metrics dict (metrics.json["metrics"]): name -> {"value": float, "ci": [lo, hi], "n": int}
plus task-specific extras under other keys (e.g. "confusion": {"labels": [...], "matrix": [[...]]}).
Parse failures are never replaced by a guess: they count as wrong and are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Parsed:
    value: Any          # the structured answer (int for count, label str for classify, ...); None on failure
    ok: bool            # False = parse failure (counted, reported with the raw text)
    raw: str            # the text that was parsed
