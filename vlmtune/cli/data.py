"""The data verb: synth, inspect, convert, split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmtune.cli.common import Verb, key_values
from vlmtune.errors import ConfigError


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

    opts = key_values(a.opt, "--opt")
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


def add_verbs(verb: Verb) -> None:
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
                   help="fractions of the groups per split, e.g. train=0.7225,val=0.1275,test=0.15 (85:15 train:test, "
                        "then 15%% of train held out for validation) or train=0.8,test=0.2")
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
