"""Synthetic datasets from the shapes world, written as PNG images next to a canonical JSONL file.

    vlmtune data synth --task count --n 2000 --out data/count

Tasks:
- caption:  "Describe the image." -> "three shapes: two red, zero green, one blue and zero yellow. two red
            circles and one blue square." (half of them with digits: "3 shapes: 2 red, 0 green, ...")
            (used to pretrain the tiny base model; it never sees the downstream question formats)
- count:    "How many {colour} shapes are there?" (colour uniform over red, green, blue, yellow) -> "2"
            (target: int, 0..5, uniform; 0-4 shapes of the other colours besides, at least one shape)
- classify: "Which kind of shape is most common ...?" -> "circles" | "squares" | "triangles" | "mixed"
            (target: label, uniform over the 4 classes; "mixed" = a tie for most common)
- memory:   long-horizon episodes with probes of seven kinds (`vlmtune.data.synth.memory`; n = probes)
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example, atomic_write_bytes, write_jsonl
from vlmtune.data.synth.shapes import COLORS, KINDS, MAX_SHAPES, Scene, caption, make_scene, render
from vlmtune.errors import ConfigError
from vlmtune.logs import progress_bar

CLASSIFY_LABELS = ("circles", "squares", "triangles", "mixed")
COUNT_MAX = 5
CAPTION_PROMPT = "Describe the image."
COUNT_PROMPT = "How many {color} shapes are there?"
CLASSIFY_PROMPT = "Which kind of shape is most common in this image? Answer circles, squares, triangles or mixed."


@dataclass
class Item:
    """What a generator returns for one example: scenes (rendered to PNGs, in placeholder order),
    the conversation (with one <image> placeholder per scene), and the structured answer."""

    scenes: list[Scene]
    messages: list[dict[str, str]]
    target: Any
    options: list[Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def single_turn(scene: Scene, prompt: str, answer: str, target: Any, options: list | None = None) -> Item:
    return Item(
        scenes=[scene],
        messages=[{"role": "user", "content": f"{IMAGE_TOKEN}\n{prompt}"}, {"role": "assistant", "content": answer}],
        target=target,
        options=options,
        meta={"scene": scene.to_dict()},
    )


# task name -> generator(rng, **options) -> Item. Modules of this package add theirs with @generator("name").
# A generator's options are keyword arguments with defaults (data.synth_options); it draws the same random
# numbers whatever they are, so an option changes what it sets and nothing else.
GENERATORS: dict[str, Callable[..., Item]] = {}


def generator(name: str):
    def deco(fn):
        GENERATORS[name] = fn
        return fn

    return deco


@generator("caption")
def _caption_item(rng: random.Random) -> Item:
    n = rng.randint(1, MAX_SHAPES)
    scene = make_scene(rng, [(None, None)] * n)
    cap = caption(scene, digits=rng.random() < 0.5)
    return single_turn(scene, CAPTION_PROMPT, cap, cap)


@generator("count")
def _count_item(rng: random.Random) -> Item:
    color = rng.choice(list(COLORS))
    k = rng.randint(0, COUNT_MAX)
    others = [c for c in COLORS if c != color]
    n_other = rng.randint(1 if k == 0 else 0, min(4, MAX_SHAPES - k))
    specs = [(color, None)] * k + [(rng.choice(others), None) for _ in range(n_other)]
    scene = make_scene(rng, specs)
    assert scene.count(color) == k, (scene, color, k)
    return single_turn(scene, COUNT_PROMPT.format(color=color), str(k), k)


@generator("classify")
def _classify_item(rng: random.Random) -> Item:
    label = rng.choice(CLASSIFY_LABELS)
    if label == "mixed":
        tied = rng.sample(KINDS, rng.randint(2, 3))
        top = rng.randint(1, 3 if len(tied) == 2 else 2)  # at most MAX_SHAPES shapes
        counts = {k: (top if k in tied else rng.randint(0, top - 1)) for k in KINDS}
    else:
        kind = label[:-1]
        top = rng.randint(2, 3)
        counts = {k: (top if k == kind else rng.randint(0, top - 1)) for k in KINDS}
    specs = [(None, k) for k, n in counts.items() for _ in range(n)]
    rng.shuffle(specs)
    scene = make_scene(rng, specs)
    return single_turn(scene, CLASSIFY_PROMPT, label, label, list(CLASSIFY_LABELS))


def _register_more() -> None:
    """Generators living in their own modules register themselves on import."""
    from vlmtune.data.synth import coref, visdial  # noqa: F401


_register_more()


def check_options(
    task: str, options: dict[str, Any] | None, generator: Any = None, skip: tuple[str, ...] = ("rng",)
) -> dict[str, Any]:
    """The generator's options, checked by name against its keyword arguments (ConfigError otherwise).
    generator: the function that takes them (default: the task's per-example generator); skip: its arguments
    that are not options."""
    import inspect

    options = dict(options or {})
    accepted = [p for p in inspect.signature(generator or GENERATORS[task]).parameters if p not in skip]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = f"its options are: {', '.join(accepted)}" if accepted else "it takes none"
        raise ConfigError(
            f"data.synth_options: the '{task}' generator has no option {', '.join(map(repr, unknown))}; {known}"
        )
    return options


def synthesize(
    task: str,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    prefix: str | None = None,
    options: dict[str, Any] | None = None,
) -> Path:
    """Write `n` examples of `task` to OUT/data.jsonl with images under OUT/images/. Returns the JSONL path.

    Example i depends only on (seed, task, i) and the generator's `options`, so a larger n extends a smaller one.
    """
    if task == "memory":  # whole episodes whose probes share one history (vlmtune.data.synth.memory)
        from vlmtune.data.synth.memory import synthesize_memory

        return synthesize_memory(
            n,
            out_dir,
            seed=seed,
            image_size=image_size,
            **check_options(task, options, synthesize_memory, skip=("n", "out_dir", "seed", "image_size")),
        )
    if task not in GENERATORS:
        raise ConfigError(f"the shapes world has no task '{task}'; available: {', '.join(GENERATORS)}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    options = check_options(task, options)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    prefix = prefix or task
    examples = []
    first_seen: dict[str, str] = {}  # identical drawings -> one group, so they never straddle splits
    for i in progress_bar(range(n), desc=f"synth {task}"):
        rng = random.Random(f"{seed}-{task}-{i}")
        item = GENERATORS[task](rng, **options)
        images = []
        for j, scene in enumerate(item.scenes):
            img_path = (
                out / "images" / (f"{prefix}-{i:06d}.png" if len(item.scenes) == 1 else f"{prefix}-{i:06d}-{j}.png")
            )
            buf = io.BytesIO()
            render(scene, image_size).save(buf, format="PNG")
            atomic_write_bytes(img_path, buf.getvalue())  # safe when several ranks synthesize the same data
            images.append(str(img_path))
        drawn = json.dumps([dataclasses.asdict(sc) for sc in item.scenes], sort_keys=True)
        own = f"{prefix}-scene-{i:06d}"
        group = item.meta.pop("group", None) or (first_seen.setdefault(drawn, own) if item.scenes else own)
        examples.append(
            Example(
                id=f"{prefix}-{i:06d}",
                task=item.meta.pop("task", task),
                images=images,
                messages=item.messages,
                target=item.target,
                options=item.options,
                group=group,
                meta={"source": "shapes-world", "seed": seed, **item.meta},
            )
        )
    return write_jsonl(out / "data.jsonl", examples)
