"""Every bad input a user can give gets a clear error: exit code 2 from the CLI, no traceback, the file (and line
or record) or the key, and for the cases below marked FIX, what to do. Nothing bad is silently accepted.

Each case is one CLI command on a broken input, as a user would type it. The classes: range checks on every
numeric config field (and task option), wrong JSON types in every JSON reader, every `score` input kind, and
the cases found by trying vlmtune as a new user would (issue 16).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from vlmtune.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "quickstart.yaml")
FIX = ("Fix:", "pip install", "choose one of", "Did you mean", "did you mean")


def _record(i, target=1, images=None, **kw):
    msgs = [
        {"role": "user", "content": "<image>\nHow many?" if images else "How many?"},
        {"role": "assistant", "content": str(target)},
    ]
    return {"id": f"e{i}", "task": "count", "images": images or [], "messages": msgs, "target": target, **kw}


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------- the case table
# name -> (build(tmp, model) -> argv, texts the error must contain, must it say what to do (FIX)?)
CASES: dict = {}


def case(name, *needles, fix=True):
    def add(build):
        CASES[name] = (build, needles, fix)
        return build

    return add


def run_args(tmp, model, *extra):
    return [
        "run",
        RECIPE,
        f"output_dir={tmp / 'runs'}",
        "name=b",
        f"model.name={model}",
        "data.n=24",
        "train.max_steps=1",
        "train.batch_size=4",
        "eval.n_boot=100",
        "eval.max_new_tokens=2",
        "-q",
        *extra,
    ]


def files_run(tmp, model, path, *extra):
    return run_args(tmp, model, "data.source=files", f"data.path={path}", *extra)


# --- recipes and keys
case("recipe: top level is a list", "top level", "list")(
    lambda t, m: ["validate", str(_write(t / "r.yaml", "- data\n- model\n"))]
)
case("recipe: a list with an override", "top level")(
    lambda t, m: ["validate", str(_write(t / "r.yaml", "- data\n")), "name=x"]
)
case("recipe: top level is a string", "top level", "str")(
    lambda t, m: ["validate", str(_write(t / "r.yaml", "hello\n"))]
)
case("recipe: empty file", "empty")(lambda t, m: ["validate", str(_write(t / "r.yaml", ""))])
case("recipe: empty mapping", "empty")(lambda t, m: ["validate", str(_write(t / "r.yaml", "{}\n"))])
case("recipe: not YAML", "not valid YAML")(lambda t, m: ["validate", str(_write(t / "r.yaml", "data: [\n"))])
case("recipe: a folder", "folder")(lambda t, m: ["validate", str(t)])
case("recipe: missing", "recipe not found", fix=False)(lambda t, m: ["validate", str(t / "none.yaml")])
case("recipe: section not a mapping", "'train' must be a mapping")(
    lambda t, m: ["validate", str(_write(t / "r.yaml", "train: 3\n"))]
)
case("recipe: unknown key", "Did you mean 'epochs'")(lambda t, m: ["validate", RECIPE, "train.epcohs=3"])
case("recipe: moved key", "has moved")(
    lambda t, m: ["validate", str(_write(t / "r.yaml", "eval: {permutations: 2}\n"))]
)
case("override: not key=value", "key=value")(lambda t, m: ["validate", RECIPE, "train.lr"])
case("override: value not YAML", "not valid YAML")(lambda t, m: ["validate", RECIPE, "train.lr=[1,"])
case("override: through a scalar key", "'name' expects str")(lambda t, m: ["validate", RECIPE, "name.x=1"])
case("train.lora_dropout=1.5", "train.lora_dropout", "< 1")(lambda t, m: ["validate", RECIPE, "train.lora_dropout=1.5"])
case("data.image_size=0", "data.image_size", ">= 8")(lambda t, m: ["validate", RECIPE, "data.image_size=0"])
case("train.epochs=-1", "train.epochs", "> 0")(lambda t, m: ["validate", RECIPE, "train.epochs=-1"])
case("train.warmup_ratio=2.0", "train.warmup_ratio", "<= 1")(
    lambda t, m: ["validate", RECIPE, "train.warmup_ratio=2.0"]
)
case("train.save_steps=-5", "train.save_steps")(lambda t, m: ["validate", RECIPE, "train.save_steps=-5"])
case("data.n=0 names data.n", "data.n")(lambda t, m: ["validate", RECIPE, "data.n=0"])
case("train.max_steps=0", "train.max_steps", "not 0")(lambda t, m: ["validate", RECIPE, "train.max_steps=0"])
case("train.lr=nan", "train.lr", "finite")(lambda t, m: ["validate", RECIPE, "train.lr=.nan"])
case("train.lr=inf", "train.lr", "finite")(lambda t, m: ["validate", RECIPE, "train.lr=.inf"])
case("train.lr=abc", "train.lr", "float")(lambda t, m: ["validate", RECIPE, "train.lr=abc"])
case("train.batch_size=1.5", "train.batch_size", "int")(lambda t, m: ["validate", RECIPE, "train.batch_size=1.5"])
case("eval.n_boot=true", "eval.n_boot", "int")(lambda t, m: ["validate", RECIPE, "eval.n_boot=true"])
case("eval.zero_shot=maybe", "eval.zero_shot", "bool")(lambda t, m: ["validate", RECIPE, "eval.zero_shot=maybe"])
case("train.report_to=3", "train.report_to", "list")(lambda t, m: ["validate", RECIPE, "train.report_to=3"])
case("data.split does not sum to 1", "data.split")(lambda t, m: ["validate", RECIPE, "data.split.test=0.2"])
case("data.split with a string", "data.split")(lambda t, m: ["validate", RECIPE, "data.split={train: a, test: b}"])
case("a choice", "choose one of")(lambda t, m: ["validate", RECIPE, "train.lora_target=vision"])
case("unknown task", "Did you mean 'count'")(lambda t, m: ["validate", RECIPE, "data.task=cuont"])
case("unknown task option", "data.task_options")(lambda t, m: ["validate", RECIPE, "data.task_options.max_cnt=3"])
case("task option out of range", "data.task_options.max_count", ">= 1")(
    lambda t, m: ["validate", RECIPE, "data.task_options.max_count=0"]
)
case("mcq permutations=-1", "data.task_options.permutations")(
    lambda t, m: ["validate", str(ROOT / "recipes" / "shapes_mcq.yaml"), "data.task_options.permutations=-1"]
)
case("unknown format option", "data.format_options")(
    lambda t, m: ["validate", RECIPE, "data.source=files", "data.path=x.jsonl", "data.format_options.foo=1"]
)
case("files without a path", "data.path")(lambda t, m: ["validate", RECIPE, "data.source=files"])
case("--resume with --overwrite", "contradict")(lambda t, m: [*run_args(t, m), "--resume", "--overwrite"])


# --- data files
@case("data.path is a folder (jsonl)", "is a folder")
def _(t, m):
    (t / "d").mkdir()
    return files_run(t, m, t / "d")


case("data.path missing", "not found")(lambda t, m: files_run(t, m, t / "none.jsonl"))
case("data file empty names the file", "empty.jsonl", "no records")(
    lambda t, m: files_run(t, m, _write(t / "empty.jsonl", ""))
)
case("data file only blank lines", "blank.jsonl", "no records")(
    lambda t, m: files_run(t, m, _write(t / "blank.jsonl", "\n\n"))
)
case("data line not JSON", "d.jsonl:2", "not valid JSON")(
    lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(0), "{oops"]))
)
case("data not UTF-8", "d.jsonl:1", "UTF-8")(
    lambda t, m: files_run(t, m, (t / "d.jsonl").write_bytes(b"\xff\xfe{}\n") and t / "d.jsonl")
)


@case("truncated JPEG names the JSONL line", "d.jsonl:2", "images[0]", "cannot be decoded")
def _(t, m):
    from PIL import Image

    Image.new("RGB", (40, 40), (10, 200, 30)).save(t / "a.jpg", quality=90)
    data = (t / "a.jpg").read_bytes()
    (t / "cut.jpg").write_bytes(data[: len(data) // 2])
    return files_run(t, m, _jsonl(t / "d.jsonl", [_record(0, images=["a.jpg"]), _record(1, images=["cut.jpg"])]))


case("image path is a folder", "images[0]", "folder")(
    lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(0, images=["."])]))
)
case("image missing", "images[0]", "image not found")(
    lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(0, images=["no.png"])]))
)
case("count target not an integer (run)", "target", "whole number")(
    lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(i, target=1.5 if i == 3 else 1) for i in range(8)]))
)
case("a task's records under another task", "data.task")(
    lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(i) for i in range(8)]), "data.task=classify")
)
case("group of the wrong type", "group", "d.jsonl:1")(
    lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(0, group={"a": 1})]))
)
case("too few records to split", "would be empty")(lambda t, m: files_run(t, m, _jsonl(t / "d.jsonl", [_record(0)])))


# --- optional extras (the package made unimportable, as on the base install)
# A builder may return (argv, modules to make unimportable for the case).
case("model.load_in_4bit without bitsandbytes", "vlmtune[quant]", "model.load_in_4bit")(
    lambda t, m: (run_args(t, m, "model.load_in_4bit=true"), ["bitsandbytes"])
)
case("train.optim=paged_adamw_8bit without bitsandbytes", "vlmtune[quant]", "train.optim")(
    lambda t, m: (run_args(t, m, "train.optim=paged_adamw_8bit"), ["bitsandbytes"])
)
case("data.augment without Albumentations", "vlmtune[augment]", "data.augment")(
    lambda t, m: (run_args(t, m, "data.augment={label: '1', copies: 1}"), ["albumentations"])
)
case("eval --load-in-4bit without bitsandbytes", "vlmtune[quant]")(
    lambda t, m: (
        [
            "eval",
            "--model",
            str(m),
            "--data",
            str(_jsonl(t / "d.jsonl", [_record(0)])),
            "--load-in-4bit",
            "--out",
            str(t / "ev"),
        ],
        ["bitsandbytes"],
    )
)
case("data split --augment-label without Albumentations", "vlmtune[augment]")(
    lambda t, m: (
        [
            "data",
            "split",
            str(_jsonl(t / "d.jsonl", [_record(i) for i in range(8)])),
            "--out",
            str(t / "s"),
            "--augment-label",
            "1",
        ],
        ["albumentations"],
    )
)
case("dialog bertscore without its extra", "vlmtune[bertscore]")(
    lambda t, m: (run_args(t, m, "data.task=dialog", "data.task_options.bertscore=true"), ["bert_score"])
)


# --- models and adapters
@case("an adapter from another base", "does not fit", "--model")
def _(t, m):
    from tests.conftest import MICRO
    from vlmtune.config import ModelConfig, TrainConfig
    from vlmtune.models.load import load_model
    from vlmtune.models.tiny import TinyBaseConfig, save_untrained
    from vlmtune.train.trainer import attach_lora

    other = save_untrained(TinyBaseConfig(**{**MICRO, "text_hidden": 32}), t / "other")
    model, proc = load_model(ModelConfig(name=str(other)))
    attach_lora(model, TrainConfig(lora_r=4)).save_pretrained(t / "adapter")
    return [
        "eval",
        "--model",
        str(m),
        "--adapter",
        str(t / "adapter"),
        "--data",
        str(_jsonl(t / "d.jsonl", [_record(0)])),
        "--out",
        str(t / "ev"),
    ]


case("--adapter without adapter_config.json", "adapter_config.json", fix=False)(
    lambda t, m: ["eval", "--model", str(m), "--adapter", str(t), "--data", str(_jsonl(t / "d.jsonl", [_record(0)]))]
)
case("model that is not there", "cannot load model")(lambda t, m: run_args(t, t / "no-model"))
case("eval --data is a folder", "folder")(lambda t, m: ["eval", "--model", str(m), "--data", str(t)])
case("predict: image missing", "image not found")(
    lambda t, m: ["predict", "--model", str(m), "--image", str(t / "none.png"), "--prompt", "hi"]
)
case("export: not a run", "export:")(lambda t, m: ["export", str(t), "--out", str(t / "o")])
case("compare: not an evaluation", "predictions.jsonl")(
    lambda t, m: ["compare", str(t), str(t / "other"), "--out", str(t / "c")]
)  # two folders, neither an evaluation


# --- score: every input kind (text JSONL, option scores JSONL, VisDial ranks JSON)
def _gold(t, n=3, options=None, target=None):
    rows = [{**_record(i, target=i if target is None else target), "options": options} for i in range(n)]
    return _jsonl(t / "gold.jsonl", rows)


def score(t, preds, *, gold=None, task="count"):
    p = t / "preds.jsonl"
    if isinstance(preds, bytes):
        p.write_bytes(preds)
    else:
        _write(p, preds if isinstance(preds, str) else "".join(json.dumps(r) + "\n" for r in preds))
    return ["score", "--task", task, "--data", str(gold or _gold(t)), "--predictions", str(p), "--out", str(t / "s")]


case("score: predictions file missing", "not found")(
    lambda t, m: ["score", "--task", "count", "--data", str(_gold(t)), "--predictions", str(t / "none.jsonl")]
)
case("score: predictions is a folder", "folder")(
    lambda t, m: ["score", "--task", "count", "--data", str(_gold(t)), "--predictions", str(t)]
)
case("score: a line not JSON", "preds.jsonl:2", "not valid JSON")(
    lambda t, m: score(t, '{"id": "e0", "prediction": "0"}\n{oops\n')
)
case("score: not UTF-8", "UTF-8")(lambda t, m: score(t, b"\xff\xfe\x00"))
case("score: a row without id", "preds.jsonl:1")(lambda t, m: score(t, [{"prediction": "1"}]))
case("score: a row that is a list", "preds.jsonl:1")(lambda t, m: score(t, [[1, 2]]))
case("score: duplicate ids", "duplicate id")(
    lambda t, m: score(t, [{"id": "e0", "prediction": "0"}, {"id": "e0", "prediction": "0"}])
)
case("score: missing and unknown ids", "no prediction")(
    lambda t, m: score(t, [{"id": "e0", "prediction": "0"}, {"id": "zz", "prediction": "0"}])
)
case("score: text and scores mixed", "mixes")(
    lambda t, m: score(t, [{"id": "e0", "prediction": "0"}, {"id": "e1", "scores": [1.0]}])
)
case("score: prediction is null", "prediction", "not text")(
    lambda t, m: score(t, [{"id": f"e{i}", "prediction": None} for i in range(3)])
)
case("score: prediction is a list", "prediction", "not text")(
    lambda t, m: score(t, [{"id": f"e{i}", "prediction": ["1"]} for i in range(3)])
)
case("score: NaN scores", "finite")(
    lambda t, m: score(t, '{"id": "e0", "scores": [NaN, 1.0, 0.5]}\n', gold=_gold(t, 1, ["0", "1", "2"]))
)
case("score: infinite scores", "finite")(
    lambda t, m: score(t, '{"id": "e0", "scores": [Infinity, 1.0, 0.5]}\n', gold=_gold(t, 1, ["0", "1", "2"]))
)
case("score: non-numeric scores", "finite")(
    lambda t, m: score(t, [{"id": "e0", "scores": ["a", "b", "c"]}], gold=_gold(t, 1, ["0", "1", "2"]))
)
case("score: scores not a list", "scores")(
    lambda t, m: score(t, [{"id": "e0", "scores": 3}], gold=_gold(t, 1, ["0", "1", "2"]))
)
case("score: empty scores", "scores")(
    lambda t, m: score(t, [{"id": "e0", "scores": []}], gold=_gold(t, 1, ["0", "1", "2"]))
)
case("score: wrong score count", "3 options", "2 scores")(
    lambda t, m: score(t, [{"id": "e0", "scores": [1.0, 2.0]}], gold=_gold(t, 1, ["0", "1", "2"]))
)
case("score: count task, 3 scores per example", "21 options", "3 scores")(
    lambda t, m: score(t, [{"id": f"e{i}", "scores": [0.1, 0.5, 0.2]} for i in range(3)])
)
case("score: count target not an integer", "target", "whole number")(
    lambda t, m: score(t, [{"id": f"e{i}", "prediction": "1"} for i in range(3)], gold=_gold(t, target="many"))
)
case("score: count target fractional", "target", "whole number")(
    lambda t, m: score(t, [{"id": f"e{i}", "prediction": "1"} for i in range(3)], gold=_gold(t, target=1.5))
)
case("score: mcq target out of range", "target")(
    lambda t, m: score(
        t,
        [{"id": "e0", "prediction": "A"}],
        task="mcq",
        gold=_jsonl(t / "g.jsonl", [{**_record(0, target=7), "task": "mcq", "options": ["a", "b"]}]),
    )
)


def _visdial_gold(t):
    rows = []
    for i in range(2):
        r = _record(i, target={"round": 1, "answer": "yes", "gt_index": 0, "relevance": None})
        r.update(task="dialog", options=["yes", "no", "maybe"], meta={"image_id": 7 + i, "round_id": 1})
        rows.append(r)
    return _jsonl(t / "vd.jsonl", rows)


case("score: VisDial JSON invalid", "not valid JSON")(
    lambda t, m: score(t, '[{"image_id": 7,', gold=_visdial_gold(t), task="dialog")
)
case("score: VisDial entry not an object", "image_id, round_id, ranks")(
    lambda t, m: score(t, "[1, 2]", gold=_visdial_gold(t), task="dialog")
)
case("score: VisDial ranks not a permutation", "not a permutation")(
    lambda t, m: score(
        t,
        json.dumps(
            [{"image_id": 7, "round_id": 1, "ranks": [1, 1, 2]}, {"image_id": 8, "round_id": 1, "ranks": [1, 2, 3]}]
        ),
        gold=_visdial_gold(t),
        task="dialog",
    )
)
case("score: VisDial ranks not numbers", "not a permutation")(
    lambda t, m: score(
        t,
        json.dumps(
            [
                {"image_id": 7, "round_id": 1, "ranks": ["1", "2", "3"]},
                {"image_id": 8, "round_id": 1, "ranks": [1, 2, 3]},
            ]
        ),
        gold=_visdial_gold(t),
        task="dialog",
    )
)
case("score: VisDial ranks of the wrong length", "3 options", "2 scores")(
    lambda t, m: score(
        t,
        json.dumps(
            [{"image_id": 7, "round_id": 1, "ranks": [1, 2]}, {"image_id": 8, "round_id": 1, "ranks": [1, 2, 3]}]
        ),
        gold=_visdial_gold(t),
        task="dialog",
    )
)
case("score: VisDial entry for no example", "no example has image_id")(
    lambda t, m: score(
        t, json.dumps([{"image_id": 99, "round_id": 1, "ranks": [1, 2, 3]}]), gold=_visdial_gold(t), task="dialog"
    )
)
case("score: VisDial entry twice", "ranked twice")(
    lambda t, m: score(
        t, json.dumps([{"image_id": 7, "round_id": 1, "ranks": [1, 2, 3]}] * 2), gold=_visdial_gold(t), task="dialog"
    )
)


# --- wrong JSON types in every JSON reader (`vlmtune data convert`)
def convert(fmt, content, *opts, ext=".json"):
    def build(t, m):
        from PIL import Image

        Image.new("RGB", (16, 16)).save(t / "img.png")
        Image.new("RGB", (16, 16)).save(t / "VisualDialog_val2018_000000000001.jpg")
        src = _write(t / f"in{ext}", content if isinstance(content, str) else json.dumps(content))
        extra = [x for o in opts for x in ("--opt", o)]
        return ["data", "convert", "--format", fmt, str(src), "--out", str(t / "o.jsonl"), *extra]

    return build


MSG = [{"role": "user", "content": "x"}]
for name, row in {
    "a list": [1, 2],
    "messages a string": {"id": "a", "task": "count", "messages": "hi"},
    "images a string": {"id": "a", "task": "count", "images": "img.png", "messages": MSG},
    "meta a list": {"id": "a", "task": "count", "messages": MSG, "meta": [1]},
    "id a list": {"id": [1], "task": "count", "messages": MSG},
    "role an int": {"id": "a", "task": "count", "messages": [{"role": 1, "content": "x"}]},
    "content an int": {"id": "a", "task": "count", "messages": [{"role": "user", "content": 1}]},
    "options a string": {"id": "a", "task": "count", "messages": MSG, "options": "abc"},
    "task an int": {"id": "a", "task": 3, "messages": MSG},
}.items():
    case(f"jsonl reader: {name}", "in.jsonl:1", fix=False)(convert("jsonl", json.dumps(row) + "\n", ext=".jsonl"))

TURN = [{"speaker": "A", "text": "t"}]
MCQ = {"id": "a", "turns": TURN, "question": "q", "options": ["a", "b", "c", "d"], "answer": "A"}
for name, row in {
    "a number": 1,
    "turns a string": {**MCQ, "turns": "x"},
    "a turn an int": {**MCQ, "turns": [1]},
    "options a string": {**MCQ, "options": "abcd"},
    "answer a list": {**MCQ, "answer": [1]},
    "question an int": {**MCQ, "question": 3},
    "option_photo a string": {**MCQ, "option_photo": "x"},
    "text an int": {**MCQ, "turns": [{"speaker": "A", "text": 5}]},
}.items():
    case(f"mcq_json reader: {name}", "in.json", fix=False)(convert("mcq_json", [row]))

for name, (row, opts) in {
    "a number": (1, ("task=caption",)),
    "conversations a string": ({"conversations": "x"}, ("task=caption",)),
    "a message an int": ({"conversations": [1, 2]}, ("task=caption",)),
    "value an int": (
        {"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "x"}]},
        ("task=caption",),
    ),
    "openai part text an int": (
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": 5}]},
                {"role": "assistant", "content": "x"},
            ]
        },
        ("task=caption", "formatting=openai"),
    ),
}.items():
    case(f"sharegpt reader: {name}", "in.json", fix=False)(convert("sharegpt", [row], *opts))


def _vd(dialogs, questions=("q?",)):
    return {
        "version": "1.0",
        "split": "val2018",
        "data": {"questions": list(questions), "answers": ["a"], "dialogs": dialogs},
    }


ROUND = {"question": 0, "answer": 0, "gt_index": 0, "answer_options": [0]}
for name, (content, fix) in {
    "a list at the top": ([1], True),
    "data a string": ({"data": "x"}, True),
    "dialogs a string": (_vd("x"), True),
    "questions an object": ({**_vd([]), "data": {**_vd([])["data"], "questions": {"a": 1}}}, True),
    "a dialog an int": (_vd([1]), False),
    "a round a string": (_vd([{"image_id": 1, "caption": "c", "dialog": ["x"]}]), False),
    "question index out of range": (_vd([{"image_id": 1, "caption": "c", "dialog": [{**ROUND, "question": 5}]}]), True),
    "question index a string": (_vd([{"image_id": 1, "caption": "c", "dialog": [{**ROUND, "question": "0"}]}]), True),
    "answer_options a string": (
        _vd([{"image_id": 1, "caption": "c", "dialog": [{**ROUND, "answer_options": "x"}]}]),
        True,
    ),
    "caption an int": (_vd([{"image_id": 1, "caption": 5, "dialog": [ROUND]}]), False),
}.items():
    case(f"visdial reader: {name}", "in.json", fix=fix)(convert("visdial", content, "image_dirs=[.]"))


# ----------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_error(name, tmp_path, micro_model_dir, capsys, monkeypatch):
    build, needles, fix = CASES[name]
    monkeypatch.chdir(tmp_path)
    argv = build(tmp_path, micro_model_dir)
    if isinstance(argv, tuple):
        argv, blocked = argv
        for module in blocked:
            monkeypatch.setitem(sys.modules, module, None)  # `import module` fails, as where it is not installed
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}, expected 2 (a clear error); stderr: {err[-1500:]}"
    assert "vlmtune: error:" in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    if fix:
        assert any(f in err for f in FIX), f"the error does not say what to do: {err}"
    assert not list((tmp_path / "runs").glob("*/adapter")), "an adapter was trained despite the bad input"


def _numeric_fields():
    from vlmtune.config import SECTIONS, RunConfig

    for sec, cls in [("", RunConfig), *SECTIONS.items()]:
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float", int, float):
                yield f"{sec}.{f.name}" if sec else f.name, f


def _outside(meta) -> list:
    """Values just outside a field's bounds (each bound it has)."""
    vals = []
    for k, delta in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        if k in meta:
            vals.append(meta[k] + delta)
    if meta.get("not_zero"):
        vals.append(0)
    return vals


@pytest.mark.parametrize("key,f", list(_numeric_fields()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_numeric_config_field_has_bounds_that_validate_checks(key, f, capsys):
    bad = _outside(f.metadata)
    assert bad, f"{key} has no bounds: give its field ge/gt/le/lt in vlmtune/config/sections.py"
    for value in bad:
        assert main(["validate", RECIPE, f"{key}={value}"]) == 2, (key, value)
        err = capsys.readouterr().err
        assert f"'{key}' is" in err and "Fix:" in err and "Traceback" not in err, err


def test_every_numeric_task_option_has_bounds():
    from vlmtune.registry import TASKS

    for name in TASKS.names():
        for f in dataclasses.fields(TASKS.get(name).Options):
            if f.type in ("int", "float", int, float):
                assert _outside(f.metadata), f"task {name}: option {f.name} has no bounds"


def test_the_smoke_check_runs_without_the_optional_extras(tmp_path, monkeypatch, capsys):
    """--smoke on the base install: 4-bit loading and augmentation are left out, and said to be."""
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "albumentations", None)
    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    recipe = str(ROOT / "recipes" / "seed003_forensic_llava16.yaml")  # data.augment + 4-bit
    assert main(["validate", recipe]) == 0
    out = capsys.readouterr().out
    assert "vlmtune[augment]" in out and "vlmtune[quant]" in out and "`--smoke` runs without it" in out
    assert main(["run", recipe, f"output_dir={tmp_path / 'runs'}", "-q"]) == 2
    err = capsys.readouterr().err
    assert "vlmtune[augment]" in err and "vlmtune[quant]" in err
    assert main(["run", recipe, f"output_dir={tmp_path / 'runs'}", "-q", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert (
        "[smoke] every stage" in out
        and "skipped here: model.load_in_4bit" in out
        and "skipped here: data.augment" in out
    )
