"""Task "memory": a probe about an episode's past, answered from a closed vocabulary and scored exactly.

A probe (vlmtune.data.synth.memory, or your own with the same meta) asks about what an episode said or
showed before it: target is the answer ("green", "417", "3", "unknown"); `options` is the closed set the
answer comes from. meta: kind (image_recall, text_to_image, text_recall, update, frequency, temporal,
abstention), distance (turns from the evidence to the probe), bucket ("21-50"; "none" without evidence).

Parsing: `<reminder>`/`<reasoning>` blocks are stripped, then the option named (exactly, or as the one
whole word/phrase found; the rule of the classify task) is the answer; anything else is a parse failure.
Open-answer probes (no `options`: LoCoMo's) are scored by normalized exact match and by token F1 (LoCoMo's
metric), reported as `token_f1` over those probes.
Metrics: accuracy; accuracy by probe kind and by distance bucket; abstention precision and recall (the
answer "unknown" as the positive class) and the false-abstention rate (answerable probes answered
"unknown"); every entry with its 95% interval, n, clusters and method: proportions a Wilson interval
(design-effect adjusted when probes share an episode's group), token F1 a bootstrap over groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmtune.metrics.text import strip_blocks
from vlmtune.registry import TASKS
from vlmtune.stats import bootstrap_entry, proportion_entry
from vlmtune.tasks.base import Parsed, Row, Task, row_groups
from vlmtune.tasks.classify import normalize, parse_label

KIND_ORDER = ("image_recall", "text_to_image", "text_recall", "update", "frequency", "temporal", "abstention")
BUCKET_ORDER = ("1-5", "6-20", "21-50", "51-100", "101-200", "201-500", "none")


@TASKS.register(
    "memory",
    help="probes of a long episode's past (recall, update, frequency, order, abstention); closed vocabulary, exact",
)
class MemoryTask(Task):
    name = "memory"

    @dataclass
    class Options:
        abstain: str = field(default="unknown", metadata={"help": "the answer that means 'not in memory'"})

    def parse(self, text: str, example: Any = None) -> Parsed:
        clean, _ = strip_blocks(text or "")
        options = getattr(example, "options", None)
        if example is not None and not options:  # an open answer (LoCoMo): the text itself
            return Parsed(clean.strip(), bool(clean.strip()), text)
        p = parse_label(clean, [str(o) for o in (options or [self.options.abstain])])
        return Parsed(p.value, p.ok, text)

    def correct(self, value: Any, example: Any) -> bool:
        if value is None:
            return False
        if not example.options:
            return normalize(str(value)) == normalize(str(example.target))
        return str(value) == str(example.target)

    def row_extras(self, example: Any) -> Row:
        m = example.meta
        return {
            "kind": m.get("kind"),
            "bucket": m.get("bucket"),
            "distance": m.get("distance"),
            "episode": m.get("episode"),
            "open": not example.options,
        }

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        return {}

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        def entry(sel: Sequence[Row], hit=lambda r: r["correct"]) -> dict[str, Any]:
            return proportion_entry([bool(hit(r)) for r in sel], groups=row_groups(sel))

        out: dict[str, Any] = {"accuracy": entry(rows)}
        for kind in KIND_ORDER:
            sel = [r for r in rows if r.get("kind") == kind]
            if sel:
                out[f"accuracy_{kind}"] = entry(sel)
        for b in BUCKET_ORDER:
            sel = [r for r in rows if r.get("bucket") == b]
            if sel:
                out[f"accuracy_distance_{b}"] = entry(sel)
        abstain = self.options.abstain
        said = [r for r in rows if r.get("parse_ok") and str(r.get("parsed")) == abstain]
        gold = [r for r in rows if str(r["target"]) == abstain]
        answerable = [r for r in rows if str(r["target"]) != abstain]
        if said:
            out["abstention_precision"] = entry(said, lambda r: str(r["target"]) == abstain)
        if gold:
            out["abstention_recall"] = entry(gold, lambda r: r.get("parse_ok") and str(r.get("parsed")) == abstain)
        if answerable:
            out["false_abstention_rate"] = entry(
                answerable, lambda r: r.get("parse_ok") and str(r.get("parsed")) == abstain
            )
        out["parse_failure_rate"] = entry(rows, lambda r: not r.get("parse_ok"))
        open_rows = [r for r in rows if r.get("open")]
        if open_rows:
            f1 = [token_f1(str(r.get("parsed") or ""), str(r["target"])) for r in open_rows]
            out["token_f1"] = bootstrap_entry(f1, row_groups(open_rows), n_boot=n_boot, seed=seed)
        return out


def token_f1(pred: str, gold: str) -> float:
    """Token-overlap F1 of normalized texts (SQuAD's, as LoCoMo scores answers)."""
    from collections import Counter

    p, g = normalize(pred).split(), normalize(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(p == g)
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)
