"""Score predictions made elsewhere (another system, a vLLM run, an API model) on the same terms as vlmtune's own.

    vlmtune score --task count --data test.jsonl --predictions preds.jsonl --out runs/other

Accepted prediction files:
- JSONL `{"id": ..., "prediction": "text"}`: parsed by the task, exactly as generated answers are;
- JSONL `{"id": ..., "scores": [one float per option]}`: the best-scoring option is the answer
  (ranking metrics use the scores);
- VisDial's official submission JSON `[{"image_id", "round_id", "ranks": [100 ints]}]`: `ranks[i]` is the
  rank of option i (1 = best); matched to examples by `meta.image_id` (shapes-world dialogues: their
  `meta.dialog_id`) and the round in `target.round` (or `meta.round_id`).
Every example needs exactly one prediction: missing or unknown ids are errors, never dropped silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vlmtune.data.example import Example
from vlmtune.data.formats.records import load_json
from vlmtune.errors import DataError
from vlmtune.jsonlines import read_json_lines, starts_with_list
from vlmtune.tasks.base import Task, options_dict

log = logging.getLogger(__name__)

# How each kind of predictions file is named where its numbers are labelled (metrics.json, rows, the report).
SOURCES = {"text": "answer texts", "scores": "option scores", "visdial-ranks": "VisDial ranks"}


def _round_of(ex: Example) -> Any:
    if isinstance(ex.target, dict) and "round" in ex.target:
        return ex.target["round"]
    return ex.meta.get("round_id", ex.meta.get("round"))


def read_predictions(
    path: str | Path, examples: list[Example]
) -> tuple[list[str] | None, list[list[float]] | None, str]:
    """Return (texts, scores, kind) aligned with `examples`; kind is 'text', 'scores' or 'visdial-ranks'."""
    p = Path(path)
    if p.is_dir():
        raise DataError(
            "is a folder, not a predictions file",
            file=str(p),
            fix="give the JSONL (or VisDial submission JSON) file itself",
        )
    if not p.is_file():
        raise DataError("predictions file not found", file=str(p), fix="check the path given to --predictions")
    if starts_with_list(p):
        return _visdial_ranks(p, examples)
    by_id: dict[str, dict] = {}
    kind = ""
    for line in read_json_lines(p, what="the predictions file (JSONL)"):
        r = line.value
        if not isinstance(r, dict) or "id" not in r or not ({"prediction", "scores"} & set(r)):
            raise DataError(
                'expected {"id", "prediction"} or {"id", "scores"}',
                file=str(p),
                line=line.number,
                fix='one object per line: {"id", "prediction": text} or {"id", "scores": [one number per option]}',
            )
        this = "scores" if "scores" in r else "text"
        if kind and this != kind:
            raise DataError(
                f"mixes '{kind}' and '{this}' rows",
                file=str(p),
                line=line.number,
                fix="give every row the same kind of prediction",
            )
        kind = this
        if str(r["id"]) in by_id:
            raise DataError(
                f"duplicate id '{r['id']}'", file=str(p), line=line.number, field="id", fix="predict each example once"
            )
        _check_row(r, this, p, line.number)
        by_id[str(r["id"])] = r
    return _aligned(p, examples, by_id, kind)


def _visdial_ranks(p: Path, examples: list[Example]) -> tuple[list[str] | None, list[list[float]] | None, str]:
    """A VisDial submission JSON [{image_id, round_id, ranks}] -> option scores aligned with `examples`."""
    rows = load_json(p, "a VisDial submission: a JSON list of {image_id, round_id, ranks}")
    if not isinstance(rows, list):
        raise DataError(
            "expected a JSON list",
            file=str(p),
            fix="VisDial submissions are a JSON list of {image_id, round_id, ranks}",
        )
    by_id: dict[str, dict] = {}
    # VisDial examples carry meta.image_id; shapes-world dialogues use their dialog_id in its place.
    key_of = {(str(ex.meta.get("image_id", ex.meta.get("dialog_id"))), str(_round_of(ex))): ex.id for ex in examples}
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not {"image_id", "round_id", "ranks"} <= set(r):
            raise DataError(
                "expected an object with image_id, round_id, ranks",
                file=str(p),
                line=i + 1,
                fix="VisDial submissions are a JSON list of {image_id, round_id, ranks}",
            )
        ex_id = key_of.get((str(r["image_id"]), str(r["round_id"])))
        if ex_id is None:
            raise DataError(
                f"no example has image_id {r['image_id']} and round {r['round_id']}",
                file=str(p),
                line=i + 1,
                fix="score against the data file the submission was made for",
            )
        ranks = r["ranks"]
        if (
            not isinstance(ranks, list)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in ranks)
            or sorted(ranks) != list(range(1, len(ranks) + 1))
        ):
            raise DataError(
                f"ranks of image_id {r['image_id']} round {r['round_id']} are not a permutation "
                f"of 1..{len(ranks) if isinstance(ranks, list) else 'N'}",
                file=str(p),
                line=i + 1,
                field="ranks",
                fix="ranks[i] is the rank (1 = best) of option i: each of 1..N once",
            )
        if ex_id in by_id:
            raise DataError(
                f"image_id {r['image_id']} round {r['round_id']} is ranked twice",
                file=str(p),
                line=i + 1,
                fix="give each (image_id, round_id) one entry",
            )
        by_id[ex_id] = {"scores": [-float(x) for x in ranks]}  # rank 1 = highest score
    return _aligned(p, examples, by_id, "visdial-ranks")


def _aligned(
    p: Path, examples: list[Example], by_id: dict[str, dict], kind: str
) -> tuple[list[str] | None, list[list[float]] | None, str]:
    """The predictions in `by_id`, in the order of `examples`; every example exactly once."""
    ids = [ex.id for ex in examples]
    missing = [i for i in ids if i not in by_id]
    unknown = sorted(set(by_id) - set(ids))
    if missing or unknown:
        raise DataError(
            f"{len(missing)} example(s) have no prediction (e.g. {missing[:3]}) and {len(unknown)} "
            f"prediction(s) match no example (e.g. {unknown[:3]})",
            file=str(p),
            fix="predict every example of the data file exactly once",
        )
    if kind == "text":
        return [str(by_id[i]["prediction"]) for i in ids], None, kind
    scores = [[float(x) for x in by_id[i]["scores"]] for i in ids]
    return None, scores, kind


def _check_row(r: dict, kind: str, p: Path, lineno: int) -> None:
    """A prediction is text (a number is taken as its text); scores are a list of finite numbers."""
    import math

    if kind == "text":
        v = r["prediction"]
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise DataError(
                f"prediction of '{r['id']}' is {type(v).__name__}, not text",
                file=str(p),
                line=lineno,
                field="prediction",
                fix='write the system\'s raw answer as a string ("" for no answer)',
            )
        return
    sc = r["scores"]
    if (
        not isinstance(sc, list)
        or not sc
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in sc)
    ):
        raise DataError(
            f"scores of '{r['id']}' must be a non-empty list of finite numbers, got {sc!r}"[:300],
            file=str(p),
            line=lineno,
            field="scores",
            fix="one number per option (higher = more likely); no NaN, infinity, strings or nulls",
        )


def score_predictions(
    task: Task,
    examples: list[Example],
    predictions: str | Path,
    out_dir: str | Path,
    *,
    label: str | None = None,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Compute the task's metrics for a predictions file and write an evaluation directory."""
    from vlmtune.eval.run import (
        Answers,
        EvalRecord,
        best_option,
        data_hash,
        library_versions,
        options_for,
        write_evaluation,
    )

    for ex in examples:
        task.check_example(ex)
    texts, scores, kind = read_predictions(predictions, examples)
    if texts is None:
        assert scores is not None
        options = [options_for(task, ex) for ex in examples]
        for ex, opts, sc in zip(examples, options, scores):
            if len(sc) != len(opts):
                source = "its options" if ex.options else f"task '{task.name}''s answer set"
                raise DataError(
                    f"example '{ex.id}' has {len(opts)} options ({source}) but {len(sc)} scores",
                    file=str(predictions),
                    field="scores",
                    fix=f"give one score per option, in the options' order ({len(opts)} here)",
                )
        texts = [best_option(opts, sc) for opts, sc in zip(options, scores)]
    mode = "external-text" if kind == "text" else "external-scores"
    source = f"{SOURCES[kind]} in {Path(predictions).name}"
    fp = {
        "model": f"external:{Path(predictions).name}",
        "model_hash": None,
        "adapter": None,
        "adapter_hash": None,
        "task": task.name,
        "task_options": options_dict(task),
        "n": len(examples),
        "data_hash": data_hash(examples),
        "prompt_hash": None,
        "chat_template_hash": None,
        "image_size": None,
        "decoding": {"mode": mode},
        "backend": "external",
        "versions": library_versions(),
    }
    record = EvalRecord(
        label=label or Path(predictions).stem,
        model=f"external:{predictions}",
        adapter=None,
        mode=mode,
        decoding={"source": kind, "file": str(predictions), "scored_from": source},
        fingerprint=fp,
    )
    return write_evaluation(task, examples, Answers(texts, scores, scores_from=source), out_dir, record, n_boot=n_boot)
