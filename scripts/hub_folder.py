"""Write a canonical JSONL file as a Hugging Face dataset repo folder (what `hf download` leaves), for trying
`data.source: hf` offline:

    python scripts/hub_folder.py data/cctv.jsonl /tmp/cctv-hub --test 0.2

OUT/data/{train,test}-00000-of-00001.parquet (columns: image (bytes), question, answer, id) and OUT/README.md
with the `configs` block the hub reads. The split is by row order (the last --test share is the test split).
"""

from __future__ import annotations

import argparse
from pathlib import Path

README = """---
configs:
- config_name: default
  data_files:
{files}
---
# {name}

Written by scripts/hub_folder.py from {source}.
"""


def main() -> None:
    import datasets

    from vlmtune.data.example import load_jsonl

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl")
    ap.add_argument("out")
    ap.add_argument("--test", type=float, default=0.2, help="share of rows (the last ones) in the test split")
    a = ap.parse_args()
    exs = load_jsonl(a.jsonl)
    cut = round(len(exs) * (1 - a.test))
    out = Path(a.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "id": datasets.Value("string"),
        }
    )
    files = []
    for split, part in (("train", exs[:cut]), ("test", exs[cut:])):
        if not part:
            continue
        rows = {
            "image": [{"bytes": Path(e.images[0]).read_bytes(), "path": Path(e.images[0]).name} for e in part],
            "question": [e.prompt_messages()[-1]["content"].replace("<image>", "").strip() for e in part],
            "answer": [e.answer_text() or "" for e in part],
            "id": [e.id for e in part],
        }
        datasets.Dataset.from_dict(rows, features=features).to_parquet(out / "data" / f"{split}-00000-of-00001.parquet")
        files.append(f"  - split: {split}\n    path: data/{split}-*")
    (out / "README.md").write_text(README.format(files="\n".join(files), name=out.name, source=a.jsonl))
    print(f"wrote {out} ({cut} train, {len(exs) - cut} test rows)")


if __name__ == "__main__":
    main()
