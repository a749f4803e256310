"""CCTV-like frame sequences in seed 004's layout (frames/seq_NNNNNN.jpg + labels.csv `id,count`), made
here, to check what near-duplicate frames do to a split.

    write_cctv_layout("data/cctv", n_frames=2000, seed=0)      # data/cctv/frames/, data/cctv/labels.csv
    vlmtune data convert --format csv_labels data/cctv/labels.csv --out data/cctv.jsonl

One fixed camera: a static scene (floor gradient, shop fronts, a textured floor) seen at `size`, with
people (a head and a body in their clothes' colour) walking across it, more of them in busy hours.
Consecutive frames are one time step apart: each person moves a few pixels, people enter and leave, the
light drifts slowly and every frame has its own sensor noise, and is saved as JPEG (quality 85), as CCTV
exports are. `count` is the number of people whose body is in the frame. Deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from vlmtune.data.example import atomic_write_bytes, atomic_write_text


def _background(rng: random.Random, w: int, h: int) -> np.ndarray:
    y = np.linspace(0, 1, h)[:, None, None]
    img = (np.array([150, 150, 140]) * (1 - y) + np.array([90, 85, 80]) * y) * np.ones((h, w, 3))
    nprng = np.random.default_rng(rng.randrange(2**32))
    img += nprng.normal(0, 6, (h, w, 1))  # floor texture, the same in every frame
    for _ in range(6):  # shop fronts along the top
        x0, ww = rng.randrange(0, w - w // 6), rng.randrange(w // 10, w // 5)
        img[: h // 3, x0 : x0 + ww] = [rng.randrange(40, 220) for _ in range(3)]
    return img


def _person(img: np.ndarray, x: float, y: float, scale: float, colour: tuple[int, int, int]) -> None:
    h, w, _ = img.shape
    yy, xx = np.ogrid[:h, :w]
    body = ((xx - x) / (5 * scale)) ** 2 + ((yy - y) / (11 * scale)) ** 2 <= 1
    head = (xx - x) ** 2 + (yy - (y - 14 * scale)) ** 2 <= (4 * scale) ** 2
    img[body] = colour
    img[head] = (200, 160, 130)


def write_cctv_layout(
    out: str | Path, n_frames: int, *, seed: int = 0, size: tuple[int, int] = (320, 240), max_people: int = 60
) -> Path:
    """Write frames/seq_{id:06d}.jpg (ids 1..n_frames) and labels.csv; returns the CSV's path."""
    from io import BytesIO

    from PIL import Image

    out = Path(out)
    rng = random.Random(seed)
    w, h = size
    background = _background(rng, w, h)
    people: list[list[float]] = []  # x, y, dx, dy, scale, r, g, b
    rows = ["id,count"]
    noise = np.random.default_rng(seed + 1)
    for fid in range(1, n_frames + 1):
        busy = 0.1 + 0.25 * np.sin(fid / 300) ** 2  # people arriving per frame: quiet and busy hours
        if len(people) < max_people and rng.random() < busy:
            y = rng.uniform(h * 0.45, h * 0.95)
            people.append(
                [
                    rng.choice([-8.0, w + 8.0]),
                    y,
                    rng.uniform(2, 5) * rng.choice([-1, 1]),
                    rng.uniform(-0.5, 0.5),
                    0.6 + 0.8 * y / h,
                    *(rng.randrange(20, 235) for _ in range(3)),
                ]
            )
            people[-1][2] = abs(people[-1][2]) if people[-1][0] < 0 else -abs(people[-1][2])
        for p in people:
            p[0] += p[2]
            p[1] = min(h * 0.97, max(h * 0.42, p[1] + p[3]))
        people = [p for p in people if -10 <= p[0] <= w + 10]
        light = 1.0 + 0.06 * np.sin(fid / 150)  # slow drift of the light over the day
        img = background * light
        for p in sorted(people, key=lambda p: p[1]):  # farther people first
            _person(img, p[0], p[1], p[4], (int(p[5]), int(p[6]), int(p[7])))
        img += noise.normal(0, 3, img.shape)
        buf = BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
        atomic_write_bytes(out / "frames" / f"seq_{fid:06d}.jpg", buf.getvalue())
        rows.append(f"{fid},{sum(1 for p in people if 0 <= p[0] < w)}")
    atomic_write_text(out / "labels.csv", "\n".join(rows) + "\n")
    return out / "labels.csv"
