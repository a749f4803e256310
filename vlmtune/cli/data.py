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
             vlmtune data inspect data/count/data.jsonl --render 4 --out runs/inspect-count
             vlmtune data inspect recipes/quickstart.yaml --render 4
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
        # the count written, not the one asked: the memory generator writes whole episodes (about --n probes)
        n = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        print(f"wrote {n} {a.task} examples to {path}")
        return 0
    return _data_inspect(a)


def _data_inspect(a: argparse.Namespace) -> int:
    from vlmtune.config import load_config
    from vlmtune.inspect import inspect_data, write_inspection

    recipe = len(a.paths) == 1 and Path(a.paths[0]).suffix in (".yaml", ".yml")
    overrides = [f"model.name={a.model}"] if a.model else []
    if a.max_length is not None:
        overrides.append(f"train.max_length={a.max_length}")
    if a.dedup_distance is not None:
        overrides.append(f"data.dedup_distance={a.dedup_distance}")
    cfg = load_config(a.paths[0] if recipe else None, [*overrides, *a.overrides])
    out = Path(a.out or Path("runs") / f"inspect-{Path(a.paths[0]).stem}")
    insp = inspect_data(a.paths, cfg, out_dir=out, render=a.render, skip_invalid=a.skip_invalid, seed=a.seed)
    write_inspection(insp, out)
    print(
        json.dumps(
            {"file": ", ".join(a.paths), **insp.summary(), "report": str(out / "report.html")},
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0


def _data_convert(a: argparse.Namespace) -> int:
    from vlmtune.data.example import write_jsonl
    from vlmtune.registry import FORMATS

    opts = key_values(a.opt, "--opt")
    reader = FORMATS.get(a.format)(a.path, skip_invalid=a.skip_invalid, **opts)
    out = write_jsonl(a.out, reader)
    n = sum(1 for line in Path(out).read_text(encoding="utf-8").splitlines() if line.strip())
    skipped = getattr(reader, "skipped", None)
    print(
        f"[convert] {n} examples -> {out}; rejected {reader.rejected}"
        + (f" ({reader.rejects_path})" if reader.rejected else "")
        + (f"; skipped {skipped}" if skipped else "")
    )
    return 0


def _data_split(a: argparse.Namespace) -> int:
    from vlmtune.data.dedup import cross_split_pairs, merge_near_duplicates, report_pairs
    from vlmtune.data.example import load_jsonl, write_jsonl
    from vlmtune.data.splits import check_no_leakage, split_counts, split_examples

    fractions = {}
    for part in a.fractions.split(","):
        name, _, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--fractions '{a.fractions}' must look like train=0.8,val=0.1,test=0.1") from None
    examples = load_jsonl(a.path)
    if a.dedup == "group":
        examples, merged = merge_near_duplicates(examples, a.dedup_distance)
        groups = len({e.group if e.group is not None else e.id for e in examples})
        print(
            f"[split] --dedup group: {merged} merge(s) of groups with near-duplicate images leave {groups} group(s) "
            f"of {len(examples)} examples (frames of one continuous video chain into one)"
        )
    splits = split_examples(examples, fractions, seed=a.seed, stratify=not a.no_stratify)
    pairs = cross_split_pairs(splits, a.dedup_distance)
    report_pairs(pairs, "warn" if a.dedup == "group" else a.dedup, a.dedup_distance, a.path)
    out = Path(a.out)
    if a.augment_label is not None or a.augment_all:
        from vlmtune.data.augment import augment_split

        extra = augment_split(
            splits["train"],
            out / "augmented",
            split_name="train",
            label=a.augment_label,
            copies=a.augment_copies,
            seed=a.seed,
            pipeline=a.augment_pipeline,
        )
        splits["train"] = splits["train"] + list(extra)
        print(f"[split] {len(extra)} augmented copies added to train only")
    check_no_leakage(splits)
    for name, exs in splits.items():
        write_jsonl(out / f"{name}.jsonl", exs)
    print(f"[split] {', '.join(f'{k}: {len(v)}' for k, v in splits.items())} -> {out}  {split_counts(splits)}")
    print(f"[split] near-duplicate image pairs across splits (distance <= {a.dedup_distance}): {len(pairs)}")
    return 0


def add_verbs(verb: Verb) -> None:
    p = verb("data", cmd_data, "synthesize, inspect, convert or split data")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="CMD")
    s = dsub.add_parser("synth", help="write a shapes-world dataset (PNG images + JSONL)")
    s.add_argument(
        "--task",
        default="count",
        help="count | classify | caption | mcq | dialog | memory (long-horizon episodes: --n probes)",
    )
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=64)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s = dsub.add_parser("convert", help="read any registered format and write canonical JSONL")
    s.add_argument(
        "--format",
        required=True,
        help="visdial | imagefolder | csv_labels | mcq_json | sharegpt | "
        "hf_disk | hf | jsonl (see `vlmtune ls`; options in docs/formats.md)",
    )
    s.add_argument("path", help="the input (file or folder, as the format expects)")
    s.add_argument("--out", required=True, help="output JSONL file")
    s.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="key=value",
        help="reader option, value parsed as YAML (repeatable), e.g. --opt image_dirs=[imgs]",
    )
    s.add_argument("--skip-invalid", action="store_true", help="skip bad records and write them to a rejects file")
    s = dsub.add_parser("split", help="seeded, stratified, grouped split (optionally augment the train split)")
    s.add_argument("path", help="a canonical JSONL file")
    s.add_argument("--out", required=True, help="folder for train/val/test.jsonl")
    s.add_argument(
        "--fractions",
        default="train=0.8,val=0.1,test=0.1",
        help="fractions of the groups per split, e.g. train=0.7225,val=0.1275,test=0.15 (85:15 train:test, "
        "then 15%% of train held out for validation) or train=0.8,test=0.2",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-stratify", action="store_true")
    s.add_argument("--augment-label", help="write Albumentations copies of this label's train examples")
    s.add_argument("--augment-all", action="store_true", help="augment every train example (with --augment-copies)")
    s.add_argument("--augment-copies", type=int, default=4)
    s.add_argument("--augment-pipeline", default="default", help="default | photometric | geometric")
    _dedup_args(s)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s = dsub.add_parser(
        "inspect",
        help="what the model will see: rendered examples, token lengths, images, labels, "
        "refused examples, near-duplicates (report.md + report.html)",
    )
    s.add_argument(
        "paths",
        nargs="+",
        metavar="FILE|RECIPE",
        help="JSONL files (each one split, named by its file name) or one recipe YAML (its splits)",
    )
    s.add_argument(
        "--render",
        type=int,
        default=0,
        metavar="N",
        help="render N examples with the model's chat template, and measure token lengths (loads the "
        "model's processor, not its weights)",
    )
    s.add_argument("--model", help="the model whose chat template renders (default: the recipe's model.name, or tiny)")
    s.add_argument("--max-length", type=int, help="the train.max_length to check against (default: the recipe's)")
    s.add_argument("--dedup-distance", type=int, help="near-duplicate threshold (default: data.dedup_distance, 20)")
    s.add_argument("--out", help="report folder (default: runs/inspect-<name>)")
    s.add_argument("--seed", type=int, default=0, help="which examples are rendered")
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="key=value",
        help="a recipe override, e.g. --set data.sample=200 (repeatable)",
    )
    s.add_argument(
        "--skip-invalid",
        action="store_true",
        help="list bad records as refused (and write them to PATH.rejects.jsonl) instead of stopping",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _dedup_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--dedup",
        default="warn",
        choices=["error", "warn", "group"],
        help="near-duplicate images across splits: stop, report (default), or merge them into one group "
        "before splitting",
    )
    s.add_argument(
        "--dedup-distance",
        type=int,
        default=20,
        help="near-duplicate threshold in differing bits of the 189-bit image hash (default 20)",
    )
