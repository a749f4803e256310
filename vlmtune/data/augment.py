"""Offline image augmentation of the TRAIN split with Albumentations (seed 003: x4 on the minority class).

    splits = split_examples(examples, {"train": 0.7225, "val": 0.1275, "test": 0.15}, seed=0)
    extra = augment_split(splits["train"], "runs/x/data/images", split_name="train",
                          label="마약 거래 대화", copies=4, seed=0)
    splits["train"] += extra          # copies share their source's group: check_no_leakage still passes

Augment AFTER splitting, and only the training split: a copy of a test image in train would be a
near-duplicate leak, so any other `split_name` is a ConfigError. Each copy k = 1..copies of a source
example gets: id `<id>-aug<k>`, the same messages / target / options, `group` = the source's group
(its id when it has none), meta = the source's meta + {"augmented_from": source id, "augment":
{"pipeline", "seed", "copy"}}, and new image files in `out_dir` named `<id>-aug<k>[-<image j>].<ext>`.
Copies of copies are never made (sources with meta.augmented_from are skipped and logged).

Deterministic: copy k of example X depends only on (seed, X's id, k, image index), never on the order
or number of the other examples, so the same call writes byte-identical files.

Pipelines (or pass your own `A.Compose` / a callable `(image=np.ndarray) -> {"image": np.ndarray}`):
  - "default": seed 003's set: horizontal flip, rotation / scale / shift (`A.Affine`, black border),
    brightness / contrast, then one of noise / Gaussian blur / motion blur.
  - "photometric": brightness / contrast, hue / saturation, one of noise / blur: no geometry, so
    nothing leaves the frame (counting) and left/right stay put (text that says "on the left").
  - "geometric": flip + `A.Affine` only.
For count examples the default pipeline can push objects out of the frame; a warning suggests
"photometric".

Albumentations is an optional dependency (the `augment` extra: pip install 'vlmtune[augment]').
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vlmtune.data.example import Example, atomic_write_bytes
from vlmtune.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PIPELINES = ("default", "photometric", "geometric")
TRAIN = "train"
FORMATS = ("same", "png", "jpeg")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")


def _albumentations() -> Any:
    from vlmtune.extras import require

    require("augment", "augmentation (data.augment, data split --augment-*)")
    import albumentations as A

    return A


def build_pipeline(name: str) -> Any:
    """The named Albumentations pipeline (see the module docstring)."""
    A = _albumentations()
    import cv2

    flip = A.HorizontalFlip(p=0.5)
    affine = A.Affine(
        scale=(0.9, 1.1),
        translate_percent=(-0.05, 0.05),
        rotate=(-15, 15),
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        p=0.7,
    )  # a black border invents no content
    light = A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.7)
    noise_or_blur = A.OneOf(
        [A.GaussNoise(std_range=(0.02, 0.08)), A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))],
        p=0.5,
    )
    if name == "default":
        return A.Compose([flip, affine, light, noise_or_blur])
    if name == "photometric":
        return A.Compose(
            [
                light,
                A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.5),
                noise_or_blur,
            ]
        )
    if name == "geometric":
        return A.Compose([flip, affine])
    raise ConfigError(
        f"unknown augmentation pipeline '{name}'; available: {', '.join(PIPELINES)} (or pass an albumentations.Compose)"
    )


def augment_split(
    examples: Iterable[Example],
    out_dir: str | os.PathLike,
    *,
    split_name: str,
    label: Any = None,
    copies: int = 4,
    seed: int = 0,
    pipeline: str | Any = "default",
    image_format: str = "same",
) -> list[Example]:
    """New augmented Examples for a TRAIN split (the inputs are not changed or returned).

    split_name: must be "train" (anything else is a ConfigError: augmented copies in an evaluation split
        would be near-duplicates of each other and inflate its scores).
    label: augment only examples whose target == label (e.g. the minority class); None = all.
    copies: copies per source example (>= 1). seed: the same seed writes the same files.
    pipeline: "default" | "photometric" | "geometric", an albumentations Compose, or a callable
        `(image=HxWx3 uint8) -> {"image": ...}`.
    image_format: "same" (JPEG for .jpg/.jpeg sources, else PNG), "png" or "jpeg".
    """
    if split_name != TRAIN:
        raise ConfigError(
            f"augmentation is for the train split only, got split_name='{split_name}'; augmented "
            "copies in an evaluation split would inflate its scores"
        )
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"augment copies must be an integer >= 1, got {copies!r}")
    if image_format not in FORMATS:
        raise ConfigError(f"augment image_format='{image_format}' is not supported; use one of {', '.join(FORMATS)}")
    examples = list(examples)
    name = pipeline if isinstance(pipeline, str) else type(pipeline).__name__
    transform = build_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    reseed: Callable[[int], None] | None = getattr(transform, "set_random_seed", None)

    sources, skipped_aug, skipped_noimg = [], 0, 0
    for ex in examples:
        if (ex.meta or {}).get("augmented_from") is not None:
            skipped_aug += 1
        elif label is not None and ex.target != label:
            continue
        elif not ex.images:
            skipped_noimg += 1
        else:
            sources.append(ex)
    if skipped_aug:
        log.info("augment: %d example(s) are augmented copies already and are not augmented again", skipped_aug)
    if skipped_noimg:
        log.warning("augment: %d matching example(s) have no image and are not augmented", skipped_noimg)
    if label is not None and not sources:
        present = sorted({str(ex.target) for ex in examples})[:20]
        raise ConfigError(f"no train example has target == {label!r} (with an image); targets present: {present}")
    if name == "default" and any(ex.task == "count" for ex in sources):
        log.warning(
            "augment: the 'default' pipeline moves and rotates images, which can push counted objects out "
            "of the frame; consider pipeline='photometric' for count examples"
        )

    out = Path(out_dir)
    taken = {ex.id for ex in examples}
    new: list[Example] = []
    from vlmtune.logs import progress_bar

    for ex in progress_bar(sources, desc="augment"):
        for k in range(1, copies + 1):
            new_id = f"{ex.id}-aug{k}"
            if new_id in taken:
                raise DataError(
                    f"augmented id '{new_id}' already exists",
                    field="id",
                    fix="augment each split once, from examples that are not augmented copies",
                )
            taken.add(new_id)
            images = []
            for j, src in enumerate(ex.images):
                s = _seed(seed, ex.id, k, j)
                if reseed is not None:
                    reseed(s)
                img = _load(src, ex.id)
                result = transform(image=img)["image"] if reseed is not None else _call_seeded(transform, img, s)
                ext = _extension(src, image_format)
                stem = f"{_safe(ex.id)}-aug{k}" + (f"-{j}" if len(ex.images) > 1 else "")
                path = out / f"{stem}{ext}"
                atomic_write_bytes(path, _encode(result, ext))
                images.append(str(path.resolve()))
            new.append(
                Example(
                    id=new_id,
                    task=ex.task,
                    messages=copy.deepcopy(ex.messages),
                    images=images,
                    target=copy.deepcopy(ex.target),
                    options=copy.deepcopy(ex.options),
                    group=ex.group if ex.group is not None else ex.id,
                    meta={
                        **copy.deepcopy(ex.meta or {}),
                        "augmented_from": ex.id,
                        "augment": {"pipeline": name, "seed": seed, "copy": k},
                    },
                )
            )
    log.info(
        "augment: %d source example(s) x %d copies -> %d new train example(s) in %s",
        len(sources),
        copies,
        len(new),
        out,
    )
    return new


def _seed(seed: int, ex_id: str, k: int, j: int) -> int:
    # A hash, not Python's hash(): stable across processes, independent of the other examples.
    return int.from_bytes(hashlib.sha256(f"{seed}|{ex_id}|{k}|{j}".encode()).digest()[:4], "little")


def _call_seeded(transform: Callable[..., Any], img: Any, s: int) -> Any:
    """A plain callable without set_random_seed: seed numpy's and random's global state around it."""
    import random

    import numpy as np

    state_np, state_py = np.random.get_state(), random.getstate()
    np.random.seed(s)
    random.seed(s)
    try:
        return transform(image=img)["image"]
    finally:
        np.random.set_state(state_np)
        random.setstate(state_py)


def _load(path: str, ex_id: str) -> Any:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
    except Exception as e:  # PIL raises many types for missing or corrupt files
        raise DataError(
            f"example '{ex_id}': image cannot be read for augmentation ({type(e).__name__}: {e}): {path}",
            field="images",
            fix="fix or remove the image, then augment again",
        ) from None


def _encode(arr: Any, ext: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(arr)
    if ext == ".jpg":
        im.save(buf, format="JPEG", quality=95)
    else:
        im.save(buf, format="PNG")
    return buf.getvalue()


def _extension(src: str, image_format: str) -> str:
    if image_format == "png":
        return ".png"
    if image_format == "jpeg":
        return ".jpg"
    return ".jpg" if Path(src).suffix.lower() in (".jpg", ".jpeg") else ".png"


def _safe(ex_id: str) -> str:
    """A file-name-safe form of an id; a short hash keeps ids that differ only in unsafe characters apart."""
    safe = _UNSAFE.sub("_", ex_id).strip("._") or "example"
    if safe != ex_id:
        safe += "-" + hashlib.sha1(ex_id.encode()).hexdigest()[:8]
    return safe
