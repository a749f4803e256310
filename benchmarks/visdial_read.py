"""Reading a VisDial v1.0 dialog file: the streaming reader vs loading the file whole with `json.load`.

    cd /work/main && PYTHONPATH=. python benchmarks/visdial_read.py                # 10,000 dialogs, ~80 MB
    PYTHONPATH=. python benchmarks/visdial_read.py --dialogs 40000 --limit 2000

The file is synthetic but VisDial-shaped (official key order: dialogs, then answers, then questions; 10
rounds per dialog, each with its own 100 answer_options and a gt_index; 50,000 questions and answers), so
its size per dialog is the real one (the train split has 123,287 dialogs). Each side runs in its own
process, and the script prints each process's peak resident memory (ru_maxrss) and wall time, and their
ratios:

- baseline (`json.load`): the reader as it was before it streamed: the whole file parsed by `json.load`
  (the same `load_json` + `_check_top`), then the same Example building;
- vlmtune: `read_visdial` as it is, streaming with ijson.

Both build every Example (or the first --limit of them, as `--smoke` and `data.limit` do) with
check_images=False (the image files exist but are empty); peak memory is VmHWM from /proc (Linux), read in
each process. The script checks both saw the same number of rounds (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import itertools, json, sys, time
mode, path, limit, rounds, images = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
import vlmtune.data.formats.visdial as vd
t = time.perf_counter()
if mode == "json":  # the reader as it was: the whole file parsed by json.load, then the same Example building
    def whole_file(p):
        obj = vd.load_json(p, "a VisDial v1.0 dialog file")
        q, a, dialogs, split = vd._check_top(obj, p)
        return q, a, iter(dialogs), split
    vd._stream_top = whole_file
reader = vd.read_visdial(path, image_dirs=[images], rounds=rounds, check_images=False)
n = sum(1 for _ in (itertools.islice(reader, limit) if limit else reader))
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))  # kB, this process only
print(json.dumps({"rounds": n, "seconds": time.perf_counter() - t, "peak_mb": peak / 1024}))
"""


def make_file(path: Path, n_dialogs: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    n_text = 50_000
    dialogs = []
    for i in range(n_dialogs):
        rounds = []
        for _ in range(10):
            opts = rng.sample(range(n_text), 100)
            gt = rng.randrange(100)
            rounds.append(
                {"question": rng.randrange(n_text), "answer": opts[gt], "answer_options": opts, "gt_index": gt}
            )
        dialogs.append({"image_id": i, "caption": "a man riding a horse on a beach", "dialog": rounds})
    obj = {
        "version": "1.0",
        "split": "val",
        "data": {
            "dialogs": dialogs,
            "answers": [f"answer number {i}" for i in range(n_text)],
            "questions": [f"what is the thing number {i} doing" for i in range(n_text)],
        },
    }
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--dialogs", type=int, default=10_000)
    p.add_argument("--rounds", choices=("all", "last"), default="all")
    p.add_argument("--limit", type=int, default=0, help="stop after this many rounds (0: all)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = make_file(tmp / "visdial_1.0_val.json", a.dialogs)
        images = tmp / "images"
        images.mkdir()
        for i in range(a.dialogs):  # the reader looks images up by name (not opened: check_images=False)
            (images / f"VisualDialog_val2018_{i:012d}.jpg").touch()
        size = path.stat().st_size / 2**20
        res = {}
        for mode in ("json", "vlmtune"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(path), str(a.limit), a.rounds, str(images)],
                capture_output=True,
                text=True,
                check=True,
            )
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    b, v = res["json"], res["vlmtune"]
    print(f"file: {a.dialogs} dialogs, {size:.0f} MB; rounds={a.rounds}, limit={a.limit or 'none'}")
    print(f"baseline (json.load, whole):   {b['rounds']} rounds, {b['seconds']:.1f} s, peak {b['peak_mb']:.0f} MB")
    print(f"vlmtune read_visdial (stream): {v['rounds']} rounds, {v['seconds']:.1f} s, peak {v['peak_mb']:.0f} MB")
    print(
        f"peak memory: {b['peak_mb'] / v['peak_mb']:.1f}x less; time: {v['seconds'] / b['seconds']:.2f}x the baseline's"
    )
    if b["rounds"] != v["rounds"]:
        print("round counts differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
