"""The shapes world: deterministic scenes of coloured shapes, their rendering and their ground truth.

A scene is up to 8 shapes placed in distinct cells of a 4x4 grid (so shapes never overlap and every
shape is fully visible), each with a kind, a colour and a size. Everything is drawn from one
`random.Random(seed)`, so the same seed gives the same pixels on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle")
COLORS = {"red": (215, 38, 38), "green": (34, 160, 60), "blue": (40, 80, 225), "yellow": (235, 195, 20)}
SIZES = ("small", "big")
GRID = 4
MAX_SHAPES = 8
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str
    cell: int  # 0..GRID*GRID-1, row-major
    jitter: tuple[int, int]


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: int  # grey level of the background
    noise_seed: int

    def count(self, color: str | None = None, kind: str | None = None) -> int:
        return sum(1 for s in self.shapes if (color is None or s.color == color) and (kind is None or s.kind == kind))

    def to_dict(self) -> dict:
        return {"shapes": [{"kind": s.kind, "color": s.color, "size": s.size, "cell": s.cell} for s in self.shapes]}


def random_shape(rng: random.Random, cell: int, *, color: str | None = None, kind: str | None = None) -> Shape:
    return Shape(
        kind=kind or rng.choice(KINDS),
        color=color or rng.choice(list(COLORS)),
        size=rng.choice(SIZES),
        cell=cell,
        jitter=(rng.randint(-2, 2), rng.randint(-2, 2)),
    )


def make_scene(rng: random.Random, specs: Sequence[tuple[str | None, str | None]]) -> Scene:
    """A scene with one shape per (color, kind) spec (None = random), in random distinct cells."""
    if len(specs) > MAX_SHAPES:
        raise ValueError(f"at most {MAX_SHAPES} shapes per scene, got {len(specs)}")
    cells = rng.sample(range(GRID * GRID), len(specs))
    shapes = tuple(random_shape(rng, c, color=col, kind=k) for c, (col, k) in zip(cells, specs))
    return Scene(
        shapes=tuple(sorted(shapes, key=lambda s: s.cell)),
        background=rng.randint(225, 250),
        noise_seed=rng.randrange(2**31),
    )


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as an RGB image of size x size pixels."""
    img = Image.new("RGB", (size, size), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    cell = size / GRID
    for s in scene.shapes:
        r_, c_ = divmod(s.cell, GRID)
        cx = (c_ + 0.5) * cell + s.jitter[0] * size / 128
        cy = (r_ + 0.5) * cell + s.jitter[1] * size / 128
        rad = cell * (0.40 if s.size == "big" else 0.27)
        fill = COLORS[s.color]
        if s.kind == "circle":
            draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=fill)
        elif s.kind == "square":
            q = rad * 0.88
            draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
        else:
            draw.polygon([(cx, cy - rad), (cx - rad, cy + rad * 0.8), (cx + rad, cy + rad * 0.8)], fill=fill)
    # Mild pixel noise, seeded, so images are not perfectly flat (as real photos are not).
    nrng = random.Random(scene.noise_seed)
    px = img.load()
    assert px is not None  # None only for images that are not loaded; this one was just made
    for _ in range(size * size // 16):
        x, y = nrng.randrange(size), nrng.randrange(size)
        r, g, b = px[x, y]  # type: ignore[misc]  # PIL types a pixel as float | tuple; in RGB mode it is a tuple
        d = nrng.randint(-12, 12)
        px[x, y] = (max(0, min(255, r + d)), max(0, min(255, g + d)), max(0, min(255, b + d)))
    return img


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, *, digits: bool = False) -> str:
    """A deterministic description: the total, the count of every colour, then each colour and kind.

    e.g. "three shapes: two red, zero green, one blue and zero yellow. two red circles and one blue square."
    With digits=True numbers are written as digits ("3 shapes: 2 red, 0 green, ..."), so that the base
    model's vocabulary covers both ways of writing numbers.
    """
    num = str if digits else number_word
    total = len(scene.shapes)
    if total == 0:
        return "an empty scene."
    per_color = [f"{num(scene.count(c))} {c}" for c in COLORS]
    groups: list[str] = []
    for color in COLORS:
        for kind in KINDS:
            n = scene.count(color, kind)
            if n:
                groups.append(f"{num(n)} {color} {kind}{'s' if n > 1 else ''}")
    return f"{num(total)} shape{'s' if total != 1 else ''}: {_join(per_color)}. {_join(groups)}."
