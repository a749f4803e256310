"""How many near-duplicate frames cross an 80:20 split of CCTV footage (seed 004's layout: frames/ + labels.csv)?

    python scripts/cctv_dedup_check.py --frames 2000 --out /tmp/cctv-check

Synthesizes CCTV-like frames (vlmtune/data/synth/cctv.py: one fixed camera, people walking, JPEG), reads them
with the csv_labels reader as `vlmtune run` would, and counts the image pairs across train/test within the
near-duplicate threshold for a random split (one group per frame, what a frames folder gives by default) and
for a split by blocks of consecutive frames. Prints one line per split and seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmtune.data.dedup import cross_split_pairs, distance, hash_images
from vlmtune.data.formats.csv_labels import read_csv_labels
from vlmtune.data.splits import split_examples
from vlmtune.data.synth.cctv import write_cctv_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--out", default="/tmp/cctv-check")
    ap.add_argument("--distance", type=int, default=20)
    ap.add_argument("--block", type=int, default=100, help="frames per group in the blocked split")
    a = ap.parse_args()
    csv = Path(a.out) / "labels.csv"
    if not csv.exists():
        write_cctv_layout(a.out, a.frames, seed=0)
    exs = list(read_csv_labels(csv))
    hashes = hash_images(e.images[0] for e in exs)
    adj = sorted(distance(hashes[x.images[0]], hashes[y.images[0]]) for x, y in zip(exs, exs[1:]))
    print(
        f"{len(exs)} frames; hash distance of consecutive frames: median {adj[len(adj) // 2]}, "
        f"90th percentile {adj[int(len(adj) * 0.9)]}, max {adj[-1]}"
    )
    for name, group in [
        ("random split, one group per frame", lambda e: e.id),
        (f"split by blocks of {a.block} frames", lambda e: str(int(e.meta["csv_id"]) // a.block)),
    ]:
        for e in exs:
            e.group = group(e)
        for seed in (0, 1, 2):
            splits = split_examples(exs, {"train": 0.8, "test": 0.2}, seed=seed, stratify=False)
            pairs = cross_split_pairs(splits, a.distance)
            hit = len({p.id_b for p in pairs})
            print(
                f"{name}, seed {seed}: {len(pairs)} cross-split pairs within distance {a.distance}; "
                f"{hit} of {len(splits['test'])} test frames have a near-duplicate in train"
            )


if __name__ == "__main__":
    main()
