"""Synthetic datasets from the shapes world, written as PNG images next to a canonical JSONL file.

    vlmtune data synth --task count --n 2000 --out data/count

Tasks:
- caption:  "Describe the image." -> "three shapes: two red, zero green, one blue and zero yellow. two red
            circles and one blue square." (half of them with digits: "3 shapes: 2 red, 0 green, ...")
            (used to pretrain the tiny base model; it never sees the downstream question formats)
- count:    "How many red shapes are there?" -> "2" (target: int, 0..5, uniform)
- classify: "Which kind of shape is most common ...?" -> "circles" | "squares" | "triangles" | "mixed"
            (target: label, uniform over the 4 classes; "mixed" = a tie for most common)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from vlmtune.data.example import IMAGE_TOKEN, Example, write_jsonl
from vlmtune.data.synth.shapes import COLORS, KINDS, MAX_SHAPES, Scene, caption, make_scene, render
from vlmtune.errors import ConfigError

CLASSIFY_LABELS = ("circles", "squares", "triangles", "mixed")
COUNT_MAX = 5
CAPTION_PROMPT = "Describe the image."
COUNT_PROMPT = "How many {color} shapes are there?"
CLASSIFY_PROMPT = "Which kind of shape is most common in this image? Answer circles, squares, triangles or mixed."


def _caption_item(rng: random.Random) -> tuple[Scene, str, str, object, list | None]:
    n = rng.randint(1, MAX_SHAPES)
    scene = make_scene(rng, [(None, None)] * n)
    cap = caption(scene, digits=rng.random() < 0.5)
    return scene, CAPTION_PROMPT, cap, cap, None


def _count_item(rng: random.Random) -> tuple[Scene, str, str, object, list | None]:
    color = rng.choice(list(COLORS))
    k = rng.randint(0, COUNT_MAX)
    others = [c for c in COLORS if c != color]
    n_other = rng.randint(1 if k == 0 else 0, min(4, MAX_SHAPES - k))
    specs = [(color, None)] * k + [(rng.choice(others), None) for _ in range(n_other)]
    scene = make_scene(rng, specs)
    assert scene.count(color) == k, (scene, color, k)
    return scene, COUNT_PROMPT.format(color=color), str(k), k, None


def _classify_item(rng: random.Random) -> tuple[Scene, str, str, object, list | None]:
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
    return scene, CLASSIFY_PROMPT, label, label, list(CLASSIFY_LABELS)


GENERATORS: dict[str, Callable[[random.Random], tuple]] = {
    "caption": _caption_item, "count": _count_item, "classify": _classify_item,
}


def synthesize(task: str, n: int, out_dir: str | Path, *, seed: int = 0, image_size: int = 64,
               prefix: str | None = None, progress: bool = True) -> Path:
    """Write `n` examples of `task` to OUT/data.jsonl with images under OUT/images/. Returns the JSONL path.

    Example i depends only on (seed, task, i), so a larger n extends a smaller one.
    """
    if task not in GENERATORS:
        raise ConfigError(f"the shapes world has no task '{task}'; available: {', '.join(GENERATORS)}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    prefix = prefix or task
    examples = []
    for i in tqdm(range(n), desc=f"synth {task}", disable=not progress, leave=False):
        rng = random.Random(f"{seed}-{task}-{i}")
        scene, prompt, answer, target, options = GENERATORS[task](rng)
        img_path = out / "images" / f"{prefix}-{i:06d}.png"
        render(scene, image_size).save(img_path)
        examples.append(Example(
            id=f"{prefix}-{i:06d}", task=task, images=[str(img_path)],
            messages=[{"role": "user", "content": f"{IMAGE_TOKEN}\n{prompt}"},
                      {"role": "assistant", "content": answer}],
            target=target, options=options, group=f"{prefix}-scene-{i:06d}",
            meta={"source": "shapes-world", "seed": seed, "scene": scene.to_dict()}))
    return write_jsonl(out / "data.jsonl", examples)
