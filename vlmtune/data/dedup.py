"""Near-duplicate images across splits: a perceptual hash of every image, and the pairs of images in
different splits whose hashes are within a Hamming distance.

    pairs = cross_split_pairs(splits, max_distance=20)       # [DupPair(train id, test id, distance, ...)]
    examples = merge_near_duplicates(examples, max_distance=20)   # data.dedup=group: pairs share a group

The same photo under two ids, frames a second apart in CCTV footage, a re-encoded, resized or slightly
cropped copy: grouped splits keep such pairs in one split only when `group` says they belong together.
This check does not trust `group`.

The hash is a DCT hash (pHash, as in the imagehash package's `phash`), taken per colour channel so that
a red and a blue shape at one place differ: each YCbCr channel box-downsampled to 16x16, its 2-D DCT
(scipy), the 8x8 lowest frequencies without the mean, one bit per coefficient (above their median or
not): 3 x 63 = 189 bits. Measured on this project's images (tests/test_dedup.py, README): re-encoded JPEG,
half-size and 2%-cropped copies of CCTV-like frames differ by 0-20 bits, adjacent frames by about 12,
distinct shapes-world drawings by 36 or more (but single-shape drawings in one place, which look alike,
by less). Pairs are found by comparing every hash of one split with every hash of another (numpy, in
blocks): n_a x n_b comparisons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from vlmtune.data.example import Example
from vlmtune.errors import DataError

log = logging.getLogger(__name__)

DEDUP_CHOICES = ("error", "warn", "group")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_BLOCK = 256  # rows of hashes compared at once (memory: _BLOCK x n x 24 bytes)
HASH_BITS = 3 * 63


@dataclass(frozen=True)
class DupPair:
    """Two examples in different splits with near-duplicate images (distance: differing hash bits)."""

    split_a: str
    id_a: str
    image_a: str
    split_b: str
    id_b: str
    image_b: str
    distance: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def image_hash(path: str) -> bytes:
    """The perceptual hash of an image file: HASH_BITS bits, as bytes."""
    from PIL import Image
    from scipy.fft import dctn

    bits = []
    with Image.open(path) as im:
        for channel in im.convert("YCbCr").split():
            small = np.asarray(channel.resize((16, 16), Image.Resampling.BOX), dtype=np.float64)
            low = dctn(small, type=2, norm="ortho")[:8, :8].ravel()[1:]  # the mean (DC) says nothing of content
            bits.append(low > np.median(low))
    return np.packbits(np.concatenate(bits)).tobytes()


def hash_images(paths: Iterable[str]) -> dict[str, bytes]:
    """path -> hash, each distinct path hashed once; an unreadable image is a DataError naming it."""
    from vlmtune.logs import progress_bar

    out: dict[str, bytes] = {}
    todo = sorted(set(paths))
    for p in progress_bar(todo, desc="[data] image hashes") if len(todo) > 500 else todo:
        try:
            out[p] = image_hash(p)
        except (OSError, ValueError) as e:
            raise DataError(
                f"image cannot be hashed ({type(e).__name__}: {e})",
                file=p,
                fix="re-export the image as PNG/JPEG or remove its record",
            ) from None
    return out


def distance(a: bytes, b: bytes) -> int:
    """How many bits of two hashes differ (Hamming distance)."""
    return int(_POPCOUNT[np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)].sum())


def close_pairs(a: list[bytes], b: list[bytes], max_distance: int, *, same: bool = False) -> list[tuple[int, int, int]]:
    """(i, j, distance) for hashes a[i], b[j] within max_distance; with same (a is b), i < j only."""
    if not a or not b:
        return []
    ha = np.frombuffer(b"".join(a), np.uint8).reshape(len(a), -1)
    hb = np.frombuffer(b"".join(b), np.uint8).reshape(len(b), -1)
    found: list[tuple[int, int, int]] = []
    for start in range(0, len(ha), _BLOCK):
        d = _POPCOUNT[ha[start : start + _BLOCK, None, :] ^ hb[None, :, :]].sum(-1, dtype=np.int64)
        ii, jj = np.nonzero(d <= max_distance)
        for i, j in zip(ii.tolist(), jj.tolist()):
            if not same or start + i < j:
                found.append((start + i, j, int(d[i, j])))
    return found


def cross_split_pairs(splits: Mapping[str, list[Example]], max_distance: int) -> list[DupPair]:
    """Every pair of examples in two different splits sharing an image within max_distance (the same file
    counts, distance 0), sorted by distance. Examples without images are not compared."""
    hashes = hash_images(p for exs in splits.values() for ex in exs for p in ex.images)
    items = {name: [(ex, p) for ex in exs for p in ex.images] for name, exs in splits.items()}
    names = [n for n in splits if items[n]]
    pairs: dict[tuple[str, str], DupPair] = {}
    for k, sa in enumerate(names):
        for sb in names[k + 1 :]:
            found = close_pairs([hashes[p] for _, p in items[sa]], [hashes[p] for _, p in items[sb]], max_distance)
            for i, j, dist in found:
                (ea, pa), (eb, pb) = items[sa][i], items[sb][j]
                key = (ea.id, eb.id)
                if key not in pairs or dist < pairs[key].distance:
                    pairs[key] = DupPair(sa, ea.id, pa, sb, eb.id, pb, dist)
    return sorted(pairs.values(), key=lambda p: (p.distance, p.split_a, p.id_a, p.split_b, p.id_b))


def merge_near_duplicates(examples: list[Example], max_distance: int) -> tuple[list[Example], int]:
    """data.dedup=group: examples whose images are near-duplicates get one group (the smallest of their
    groups), so a grouped split keeps them together. Returns the examples and how many groups were merged."""
    items = [(i, p) for i, ex in enumerate(examples) for p in ex.images]
    hashes = hash_images(p for _, p in items)
    hs = [hashes[p] for _, p in items]
    group = [ex.group if ex.group is not None else ex.id for ex in examples]
    parent = {g: g for g in group}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    merged = 0
    for i, j, _ in close_pairs(hs, hs, max_distance, same=True):
        ra, rb = find(group[items[i][0]]), find(group[items[j][0]])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            merged += 1
    for ex, g in zip(examples, group):
        root = find(g)
        if root != g or ex.group is None and root != ex.id:
            ex.group = root
    return examples, merged


def report_pairs(pairs: list[DupPair], mode: str, max_distance: int, where: str) -> None:
    """Log the cross-split pairs; with mode "error", stop (DataError) when there are any."""
    if not pairs:
        log.info(
            "[data] near-duplicate check (%s): no image pairs across splits within distance %d", where, max_distance
        )
        return
    by_splits: dict[str, int] = {}
    for p in pairs:
        key = f"{p.split_a}/{p.split_b}"
        by_splits[key] = by_splits.get(key, 0) + 1
    first = pairs[0]
    text = (
        f"{len(pairs)} near-duplicate image pair(s) across splits within distance {max_distance} "
        f"({', '.join(f'{k}: {v}' for k, v in by_splits.items())}), e.g. '{first.id_a}' ({first.split_a}) "
        f"and '{first.id_b}' ({first.split_b}) at distance {first.distance}"
    )
    fix = (
        "give related examples one `group` (frames of one scene, copies of one photo), or set data.dedup=group "
        "to merge such pairs into one group before splitting; data.dedup=warn only reports them"
    )
    if mode == "error":
        raise DataError(text, file=where, field="images", fix=fix)
    log.warning("[data] %s: %s. Fix: %s", where, text, fix)
