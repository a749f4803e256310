"""`vlmtune data inspect`: what the model will be trained on, before a long run.

    insp = inspect_data(["data/train.jsonl", "data/test.jsonl"], cfg, render=4)   # files: one split each
    insp = inspect_data(["recipes/seed004_cctv_llava15.yaml"], cfg, render=4)    # a recipe: its splits
    write_inspection(insp, "runs/inspect-train")          # report.md, report.html, plots/token_lengths.png

It shows N examples exactly as the model's chat template renders them (`train.collate.encode_example`,
the same code training runs), with the image tokens collapsed to one mark and the tokens that carry the
loss highlighted; token-length statistics and a histogram with the share `train.max_length` would cut;
image sizes and modes; the label distribution per split; the examples that would be refused, with the
reason (reader errors with --skip-invalid, the task's own check, training's truncation checks); and the
near-duplicate images across splits (`vlmtune.data.dedup`).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.config import RunConfig
from vlmtune.data.dedup import DupPair, cross_split_pairs
from vlmtune.data.example import Example
from vlmtune.errors import DataError

log = logging.getLogger(__name__)

LENGTH_SAMPLE = 2000  # examples whose token length is measured (a seeded sample of larger datasets)


@dataclass
class Segment:
    kind: str  # "prompt" (no loss) | "loss" (trained on) | "image" (image tokens), + " cut" past max_length;
    # "cutmark": where train.max_length cuts
    text: str


@dataclass
class Rendered:
    split: str
    id: str
    images: list[str]
    segments: list[Segment]
    n_tokens: int
    n_loss_tokens: int


@dataclass
class Inspection:
    """Everything the inspect report shows; built by inspect_data, written by write_inspection."""

    source: str
    task: str
    model: str | None
    max_length: int
    splits: dict[str, list[Example]]
    labels: dict[str, dict[str, int]]
    image_sizes: Counter = field(default_factory=Counter)
    image_modes: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    lengths_of: int = 0  # how many examples the lengths are a sample of
    rendered: list[Rendered] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # {split, id, reason}
    pairs: list[DupPair] = field(default_factory=list)
    max_distance: int = 0

    def summary(self) -> dict[str, Any]:
        """The numbers, as JSON (what `vlmtune data inspect` prints on stdout)."""
        exs = [e for v in self.splits.values() for e in v]
        out: dict[str, Any] = {
            "source": self.source,
            "records": len(exs),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "rejected": sum(1 for r in self.refused if r["stage"] == "reader"),
            "refused": len(self.refused),
            "tasks": dict(Counter(e.task for e in exs)),
            "images": sum(len(e.images) for e in exs),
            "targets": dict(Counter(str(e.target) for e in exs).most_common(20)),
            "image_modes": dict(self.image_modes),
            "near_duplicate_pairs": len(self.pairs),
        }
        if self.lengths:
            out["tokens"] = length_stats(self.lengths, self.max_length)
        return out


def length_stats(lengths: list[int], max_length: int) -> dict[str, Any]:
    import numpy as np

    a = np.array(lengths)
    return {
        "n": len(a),
        "min": int(a.min()),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "max": int(a.max()),
        "max_length": max_length,
        "over_max_length": int((a > max_length).sum()),
        "share_cut": float((a > max_length).mean()),
    }


def load_sources(
    paths: list[str], cfg: RunConfig, out_dir: Path, skip_invalid: bool
) -> tuple[dict[str, list[Example]], list[dict[str, Any]], str]:
    """(splits, reader refusals, source name): a recipe's splits as `run` would make them (written to
    out_dir/data), or each JSONL file as a split named by its file name."""
    from vlmtune.registry import TASKS

    if len(paths) == 1 and Path(paths[0]).suffix in (".yaml", ".yml"):
        from vlmtune.data.prepare import prepare_data

        return prepare_data(cfg, out_dir), [], paths[0]
    from vlmtune.data.formats.jsonl import read_jsonl

    splits: dict[str, list[Example]] = {}
    refused: list[dict[str, Any]] = []
    for p in paths:
        name = Path(p).stem if Path(p).stem not in splits else p
        reader = read_jsonl(p, skip_invalid=skip_invalid, known_tasks=TASKS.names())
        splits[name] = list(reader)
        refused += [
            {"split": name, "id": f"line {r['line']}", "stage": "reader", "reason": r["error"]} for r in reader.rejects
        ]
    return splits, refused, ", ".join(paths)


def inspect_data(
    paths: list[str], cfg: RunConfig, *, out_dir: Path, render: int = 0, skip_invalid: bool = False, seed: int = 0
) -> Inspection:
    """Read the data (files or a recipe) and measure what the report shows; render `render` examples with
    the chat template of cfg.model (the model's processor is loaded only when render > 0)."""
    from vlmtune.data.splits import split_counts
    from vlmtune.tasks.base import build_task

    splits, refused, source = load_sources(paths, cfg, out_dir, skip_invalid)
    exs = [(name, ex) for name, v in splits.items() for ex in v]
    task_name = exs[0][1].task if exs else cfg.data.task
    insp = Inspection(
        source=source,
        task=task_name,
        model=None,
        max_length=cfg.train.max_length,
        splits=splits,
        labels=split_counts(splits),
        refused=refused,
        max_distance=cfg.data.dedup_distance,
    )
    task = build_task(task_name, cfg.data.task_options if task_name == cfg.data.task else {})
    for name, ex in exs:
        try:
            task.check_example(ex)
        except DataError as e:
            insp.refused.append({"split": name, "id": ex.id, "stage": "task", "reason": str(e)})
    _image_stats(insp, [p for _, ex in exs for p in ex.images])
    if len([v for v in splits.values() if v]) > 1:
        insp.pairs = cross_split_pairs(splits, cfg.data.dedup_distance)
    if render > 0 and exs:
        _render(insp, exs, cfg, render, seed)
    return insp


def _image_stats(insp: Inspection, paths: list[str]) -> None:
    from PIL import Image

    for p in sorted(set(paths)):
        try:
            with Image.open(p) as im:  # the header only: size and mode, no decoding
                insp.image_sizes[f"{im.width}x{im.height}"] += 1
                insp.image_modes[im.mode] += 1
        except OSError:
            insp.image_modes["unreadable"] += 1


def _render(insp: Inspection, exs: list[tuple[str, Example]], cfg: RunConfig, n: int, seed: int) -> None:
    """Token lengths of (a sample of) every example, refusals by training's own encoding, and n renderings."""
    from vlmtune.build import resolve_model
    from vlmtune.logs import progress_bar
    from vlmtune.models.load import load_processor
    from vlmtune.processing import image_token_id, tokenizer_of
    from vlmtune.train.collate import IGNORE, EncodeSettings, encode_example

    ref = resolve_model(cfg.model)
    processor, _ = load_processor(ref)
    insp.model = cfg.model.name
    tok, img_id = tokenizer_of(processor), image_token_id(processor)
    full = EncodeSettings(loss_on=cfg.train.loss_on, max_length=10**9)
    real = EncodeSettings(loss_on=cfg.train.loss_on, max_length=cfg.train.max_length)
    rng = random.Random(seed)
    order = list(range(len(exs)))
    rng.shuffle(order)
    shown = set(order[:n])
    measured = sorted(order[: max(LENGTH_SAMPLE, n)])
    insp.lengths_of = len(exs)
    for i in progress_bar(measured, desc="[inspect] encoding"):
        split, ex = exs[i]
        try:
            enc = encode_example(processor, ex, full, cache_images=False)
        except DataError as e:
            insp.refused.append({"split": split, "id": ex.id, "stage": "encoding", "reason": str(e)})
            continue
        ids, labels = enc["input_ids"], enc["labels"]
        insp.lengths.append(len(ids))
        if len(ids) > real.max_length:
            try:
                encode_example(processor, ex, real, cache_images=False)  # training's own truncation checks
            except DataError as e:
                insp.refused.append({"split": split, "id": ex.id, "stage": "train.max_length", "reason": str(e)})
        if i in shown:
            kinds = [
                "image" if img_id is not None and int(t) == img_id else "loss" if int(lab) != IGNORE else "prompt"
                for t, lab in zip(ids, labels)
            ]
            kinds = [k if j < real.max_length else f"{k} cut" for j, k in enumerate(kinds)]
            segments = _segments(tok, ids, kinds)
            first_cut = next((j for j, g in enumerate(segments) if g.kind.endswith("cut")), None)
            if first_cut is not None:
                segments.insert(first_cut, Segment("cutmark", f"[train.max_length = {real.max_length}: cut here]"))
            insp.rendered.append(
                Rendered(split, ex.id, list(ex.images), segments, len(ids), int((labels != IGNORE).sum()))
            )


def _segments(tok: Any, ids: Any, kinds: list[str]) -> list[Segment]:
    """Runs of one kind, decoded; a run of image tokens becomes one mark `<image x N>`."""
    out: list[Segment] = []
    start = 0
    for j in range(1, len(kinds) + 1):
        if j == len(kinds) or kinds[j] != kinds[start]:
            run = ids[start:j]
            text = (
                f"<image x {len(run)}>"
                if kinds[start].startswith("image")
                else tok.decode(run.tolist(), skip_special_tokens=False)
            )
            out.append(Segment(kinds[start], text))
            start = j
    return out


# --- the report ------------------------------------------------------------------------------------

_KIND_NOTE = {"prompt": "no loss", "loss": "loss (trained on)", "image": "image tokens", "cutmark": "train.max_length"}

_MD = """# vlmtune data inspect: {{ i.source }}

Task `{{ i.task }}`{% if i.model %}, rendered with the chat template of `{{ i.model }}`{% endif %}; \
{{ s.records }} records in {{ i.splits | length }} split(s) ({% for k, v in s.splits.items() %}{{ k }}: {{ v }}{{ ", " if not loop.last }}{% endfor %}).

## Examples as the model sees them
{% if not i.rendered %}Not rendered (give --render N).{% endif %}
{% for r in i.rendered %}
### {{ r.split }} / {{ r.id }} ({{ r.n_tokens }} tokens, {{ r.n_loss_tokens }} with loss)

{% for p in r.images %}![{{ p }}]({{ rel(p) }}) {% endfor %}

```text
{% for g in r.segments %}{{ md_mark(g) }}{% endfor %}
```
{% endfor %}
{% if i.rendered %}Marks: `<image x N>` is the image's N tokens; the trained part (loss) is between `[[` and `]]`; \
text after `[train.max_length = N: cut here]` is cut off in training.{% endif %}

## Token lengths
{% if s.tokens %}{{ s.tokens.n }} of {{ i.lengths_of }} examples measured: min {{ s.tokens.min }}, median {{ s.tokens.median }}, \
95th percentile {{ s.tokens.p95 }}, max {{ s.tokens.max }}. train.max_length = {{ i.max_length }} cuts \
{{ s.tokens.over_max_length }} ({{ "%.1f" | format(100 * s.tokens.share_cut) }}%).

![token lengths](plots/token_lengths.png)
{% else %}Not measured (give --render N: the lengths need the model's tokenizer).{% endif %}

## Refused examples ({{ i.refused | length }})
{% for r in i.refused[:50] %}- {{ r.split }} / {{ r.id }} ({{ r.stage }}): {{ r.reason }}
{% else %}None.
{% endfor %}
## Near-duplicate images across splits ({{ i.pairs | length }})

Perceptual hash (vlmtune.data.dedup), pairs within {{ i.max_distance }} differing bits.
{% for p in i.pairs[:20] %}- {{ p.split_a }} `{{ p.id_a }}` and {{ p.split_b }} `{{ p.id_b }}`: distance {{ p.distance }}
{% else %}None{% if i.splits | length < 2 %} (one split: nothing to compare){% endif %}.
{% endfor %}
## Images
{{ s.images }} image references; modes: {% for k, v in i.image_modes.items() %}{{ k }} {{ v }}{{ ", " if not loop.last }}{% endfor %}.

| size | images |
|---|---|
{% for k, v in i.image_sizes.most_common(10) %}| {{ k }} | {{ v }} |
{% endfor %}
## Labels per split

| label | {% for k in i.labels %}{{ k }} | {% endfor %}
|---|{% for k in i.labels %}---|{% endfor %}
{% for lab in label_rows %}| {{ lab }} | {% for k in i.labels %}{{ i.labels[k].get(lab, 0) }} | {% endfor %}
{% endfor %}"""

_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>vlmtune data inspect</title><style>
body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th:first-child,td:first-child{text-align:left}
.render{font-family:monospace;white-space:pre-wrap;background:#f7f7f7;border:1px solid #ddd;padding:8px}
.loss{background:#c8f0c8;outline:1px solid #6b6} .image{background:#dde6ff;color:#224;border-radius:3px}
.cut{opacity:.45;text-decoration:line-through} .cutmark{color:#c33;font-weight:bold} .ex img{height:96px;margin-right:6px;image-rendering:pixelated}
.legend span{padding:1px 5px;margin-right:8px}</style></head><body>
<h1>vlmtune data inspect</h1><p>{{ i.source }}: task <b>{{ i.task }}</b>{% if i.model %}, rendered with the chat
template of <b>{{ i.model }}</b>{% endif %}; {{ s.records }} records ({% for k, v in s.splits.items() %}{{ k }}: {{ v }}{{ ", " if not loop.last }}{% endfor %}).</p>
<h2>Examples as the model sees them</h2>
<p class="legend"><span class="loss">trained on (loss)</span><span>prompt (no loss)</span>
<span class="image">image tokens</span><span class="cut">past train.max_length</span></p>
{% for r in i.rendered %}<div class="ex"><h3>{{ r.split }} / {{ r.id }} <small>({{ r.n_tokens }} tokens,
{{ r.n_loss_tokens }} with loss)</small></h3>{% for p in r.images %}<img src="{{ rel(p) }}" title="{{ p }}">{% endfor %}
<div class="render">{% for g in r.segments %}<span class="{{ g.kind }}" title="{{ note.get(g.kind.split()[0], "") }}{{ " (cut)" if g.kind.endswith("cut") }}">{{ g.text }}</span>{% endfor %}</div></div>
{% else %}<p>Not rendered (give --render N).</p>{% endfor %}
<h2>Token lengths</h2>{% if s.tokens %}<p>{{ s.tokens.n }} of {{ i.lengths_of }} examples measured: min {{ s.tokens.min }},
median {{ s.tokens.median }}, 95th percentile {{ s.tokens.p95 }}, max {{ s.tokens.max }}. train.max_length =
{{ i.max_length }} cuts <b>{{ s.tokens.over_max_length }} ({{ "%.1f" | format(100 * s.tokens.share_cut) }}%)</b>.</p>
<img src="plots/token_lengths.png" width="560">{% else %}<p>Not measured (give --render N).</p>{% endif %}
<h2>Refused examples ({{ i.refused | length }})</h2><ul>{% for r in i.refused[:50] %}<li>{{ r.split }} / {{ r.id }} ({{ r.stage }}): {{ r.reason }}</li>
{% else %}<li>None.</li>{% endfor %}</ul>
<h2>Near-duplicate images across splits ({{ i.pairs | length }})</h2><p>Perceptual hash, pairs within {{ i.max_distance }} differing bits.</p>
<table>{% for p in i.pairs[:20] %}<tr><td><img src="{{ rel(p.image_a) }}" height="64"> {{ p.split_a }} {{ p.id_a }}</td>
<td><img src="{{ rel(p.image_b) }}" height="64"> {{ p.split_b }} {{ p.id_b }}</td><td>distance {{ p.distance }}</td></tr>
{% else %}<tr><td>None{% if i.splits | length < 2 %} (one split: nothing to compare){% endif %}.</td></tr>{% endfor %}</table>
<h2>Images</h2><p>modes: {% for k, v in i.image_modes.items() %}{{ k }} {{ v }}{{ ", " if not loop.last }}{% endfor %}</p>
<table><tr><th>size</th><th>images</th></tr>{% for k, v in i.image_sizes.most_common(10) %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
<h2>Labels per split</h2><table><tr><th>label</th>{% for k in i.labels %}<th>{{ k }}</th>{% endfor %}</tr>
{% for lab in label_rows %}<tr><td>{{ lab }}</td>{% for k in i.labels %}<td>{{ i.labels[k].get(lab, 0) }}</td>{% endfor %}</tr>{% endfor %}</table>
</body></html>"""


def _md_mark(g: Segment) -> str:
    return f"[[{g.text}]]" if g.kind.startswith("loss") else g.text


def write_inspection(insp: Inspection, out_dir: str | Path) -> Path:
    """report.md, report.html and plots/token_lengths.png in out_dir (written atomically)."""
    import os

    import jinja2

    from vlmtune.data.example import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if insp.lengths:
        _plot_lengths(insp, out / "plots" / "token_lengths.png")
    labels = [k for k in next(iter(insp.labels.values()), {}) if k != "total"]
    numeric = all(k.lstrip("-").isdigit() for k in labels if k != "<other>")
    label_rows = sorted(labels, key=lambda k: (k == "<other>", int(k) if numeric and k != "<other>" else 0, k)) + [
        "total"
    ]
    ctx = {
        "i": insp,
        "s": insp.summary(),
        "label_rows": label_rows,
        "note": _KIND_NOTE,
        "md_mark": _md_mark,
        "rel": lambda p: os.path.relpath(Path(p).resolve(), out.resolve()),
    }
    md = jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(_MD).render(**ctx)
    html = jinja2.Environment(autoescape=True).from_string(_HTML).render(**ctx)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", html)
    atomic_write_json(out / "inspect.json", insp.summary())
    return out


def _plot_lengths(insp: Inspection, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    lo, hi = min(insp.lengths), max(insp.lengths)
    ax.hist(insp.lengths, bins=min(50, hi - lo + 1), range=(lo - 0.5, hi + 0.5), color="#4a7ab5")
    ax.axvline(insp.max_length, color="#c33", linestyle="--", label=f"train.max_length = {insp.max_length}")
    ax.set_xlabel("tokens per example (prompt + answer, image tokens included)")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
