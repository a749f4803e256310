"""Near-duplicate images across splits: planted copies (re-encoded JPEG, resized, slightly cropped) are found,
distinct shapes-world images are not flagged, and data.dedup error | warn | group do what they say."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.test_report import OUTCOMES, _classify_row, _image, _write_eval
from vlmtune.cli import main
from vlmtune.config import load_config
from vlmtune.data.dedup import cross_split_pairs, distance, image_hash, merge_near_duplicates
from vlmtune.data.example import Example, load_jsonl, write_jsonl
from vlmtune.data.formats.csv_labels import read_csv_labels
from vlmtune.data.prepare import DEDUP_FILE, prepare_data
from vlmtune.data.splits import split_examples
from vlmtune.data.synth import synthesize
from vlmtune.data.synth.cctv import write_cctv_layout
from vlmtune.errors import DataError
from vlmtune.pipeline import data_sections
from vlmtune.report import compare_runs

DIST = 20  # data.dedup_distance's default


def ex(i: str, path, group: str | None = None) -> Example:
    return Example(
        id=i,
        task="count",
        messages=[{"role": "user", "content": "<image>\nHow many?"}, {"role": "assistant", "content": "1"}],
        images=[str(path)],
        target=1,
        group=group,
    )


def plant(src, out_dir, name: str):
    """The three kinds of copy the check must catch."""
    im = Image.open(src).convert("RGB")
    w, h = im.size
    out = {
        "jpeg": out_dir / f"{name}-jpeg.jpg",
        "resized": out_dir / f"{name}-resized.png",
        "cropped": out_dir / f"{name}-cropped.png",
    }
    im.save(out["jpeg"], "JPEG", quality=60)
    im.resize((w // 2, h // 2), Image.Resampling.BILINEAR).save(out["resized"])
    cw, ch = round(w * 0.02), round(h * 0.02)  # 2% off every side
    im.crop((cw, ch, w - cw, h - ch)).save(out["cropped"])
    return out


@pytest.fixture(scope="module")
def cctv(tmp_path_factory):
    """Five cameras (different scenes), 16 consecutive frames each, as one canonical JSONL file."""
    root = tmp_path_factory.mktemp("cctv")
    exs = []
    for cam in range(5):
        write_cctv_layout(root / f"cam{cam}", 16, seed=cam, size=(160, 120))
        for e in read_csv_labels(root / f"cam{cam}" / "labels.csv", id_prefix=f"cam{cam}-"):
            e.group = e.id  # one group per frame, as a frames folder gives (frame names repeat across cameras)
            exs.append(e)
    write_jsonl(root / "all.jsonl", exs)
    return root


def test_planted_copies_are_found(cctv, tmp_path):
    frames = [cctv / f"cam{cam}" / "frames" / "seq_000008.jpg" for cam in range(3)]  # three different scenes
    shapes = load_jsonl(synthesize("classify", 3, tmp_path / "shapes", seed=1))
    train = [ex(f"f{i}", p) for i, p in enumerate(frames)] + [ex(s.id, s.images[0]) for s in shapes]
    test = []
    for e in train:
        for kind, path in plant(e.images[0], tmp_path, e.id).items():
            if e.id.startswith("classify") and kind == "cropped":
                continue  # a 2% crop of a 64-pixel drawing is a new drawing at this hash size (README)
            test.append(ex(f"{e.id}-{kind}", path))
    pairs = cross_split_pairs({"train": train, "test": test}, DIST)
    found = {(p.id_a, p.id_b) for p in pairs}
    assert {(t.id.rsplit("-", 1)[0], t.id) for t in test} <= found
    assert all(p.id_b.startswith(p.id_a) for p in pairs)  # nothing else: the originals are distinct
    assert max(p.distance for p in pairs) <= DIST


def test_distinct_shapes_world_images_are_not_flagged(tmp_path):
    exs = load_jsonl(synthesize("classify", 300, tmp_path / "s", seed=0))
    splits = split_examples(exs, {"train": 0.8, "test": 0.2}, seed=0)
    assert cross_split_pairs(splits, DIST) == []


def test_hash_is_stable_and_distance_counts_bits(cctv):
    p = str(cctv / "cam0" / "frames" / "seq_000001.jpg")
    assert image_hash(p) == image_hash(p) and distance(image_hash(p), image_hash(p)) == 0
    assert len(image_hash(p)) * 8 >= 189


def test_the_same_file_in_two_splits_is_distance_zero(cctv):
    p = cctv / "cam0" / "frames" / "seq_000010.jpg"
    pairs = cross_split_pairs({"train": [ex("a", p)], "val": [], "test": [ex("b", p)]}, 0)
    assert [(x.split_a, x.id_a, x.split_b, x.id_b, x.distance) for x in pairs] == [("train", "a", "test", "b", 0)]


def test_adjacent_frames_merge_into_groups(cctv):
    exs = load_jsonl(cctv / "all.jsonl")
    merged, n = merge_near_duplicates(exs, DIST)
    assert n > 0 and len({e.group for e in merged}) < len(exs)
    splits = split_examples(merged, {"train": 0.8, "test": 0.2}, seed=0)
    assert cross_split_pairs(splits, DIST) == []


def _recipe(cctv, tmp_path, mode: str) -> list[str]:
    return [
        "data.source=files",
        f"data.path={cctv / 'all.jsonl'}",
        "data.task=count",
        "data.split={train: 0.8, val: 0, test: 0.2}",
        f"data.dedup={mode}",
        f"output_dir={tmp_path}",
    ]


def test_dedup_modes_in_a_run(cctv, tmp_path, log_lines):
    cfg = load_config(None, _recipe(cctv, tmp_path, "warn"))
    prepare_data(cfg, tmp_path / "warn")
    found = json.loads((tmp_path / "warn/data" / DEDUP_FILE).read_text())
    assert found["n_pairs"] > 0 and found["pairs"][0]["distance"] <= DIST
    assert any("near-duplicate image pair(s) across splits" in line for line in log_lines)
    with pytest.raises(DataError, match="near-duplicate") as ei:
        prepare_data(load_config(None, _recipe(cctv, tmp_path, "error")), tmp_path / "error")
    assert "data.dedup=group" in ei.value.fix
    splits = prepare_data(load_config(None, _recipe(cctv, tmp_path, "group")), tmp_path / "group")
    assert json.loads((tmp_path / "group/data" / DEDUP_FILE).read_text())["n_pairs"] == 0
    assert sum(len(v) for v in splits.values()) == 80  # nothing dropped


def test_data_split_reports_pairs(cctv, tmp_path, capsys):
    src = cctv / "all.jsonl"
    assert main(["data", "split", str(src), "--out", str(tmp_path / "s"), "--fractions", "train=0.8,test=0.2"]) == 0
    out = capsys.readouterr().out
    n = int(out.split("(distance <= 20): ")[1].split()[0])
    assert n > 0
    assert (
        main(
            [
                "data",
                "split",
                str(src),
                "--out",
                str(tmp_path / "g"),
                "--fractions",
                "train=0.8,test=0.2",
                "--dedup",
                "group",
            ]
        )
        == 0
    )
    assert "(distance <= 20): 0" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "split",
                str(src),
                "--out",
                str(tmp_path / "e"),
                "--fractions",
                "train=0.8,test=0.2",
                "--dedup",
                "error",
            ]
        )
        == 2
    )


def test_the_run_report_shows_the_pairs(cctv, tmp_path):
    """What a run's data check found reaches report.md and report.html (pipeline.data_sections)."""
    run = tmp_path / "run"
    prepare_data(load_config(None, _recipe(cctv, tmp_path, "warn")), run)
    (tmp_path / "img").mkdir()
    imgs = [_image(tmp_path / "img" / f"{i}.png", (20 * i, 100, 255 - 20 * i)) for i in range(len(OUTCOMES))]
    a = _write_eval(
        run / "zero_shot", [_classify_row(i, x, imgs[i]) for i, (x, _) in enumerate(OUTCOMES)], label="zero-shot"
    )
    b = _write_eval(
        run / "finetuned", [_classify_row(i, y, imgs[i]) for i, (_, y) in enumerate(OUTCOMES)], label="fine-tuned"
    )
    n = json.loads((run / "data" / DEDUP_FILE).read_text())["n_pairs"]
    compare_runs(a, b, run, extra=data_sections(run))
    md, html = (run / "report.md").read_text(), (run / "report.html").read_text()
    assert "Near-duplicate images across splits" in md and f"**{n}** pair(s)" in md
    assert "Near-duplicate images across splits" in html
    assert data_sections(tmp_path / "nowhere") == []
    sections = json.loads((run / "comparison.json").read_text())
    assert sections["task_sections"] == [] or all("Near-duplicate" not in s["title"] for s in sections["task_sections"])
    assert sections["data_sections"][0]["title"] == "Near-duplicate images across splits"


def test_shapes_world_runs_skip_the_image_check_and_group_identical_drawings(tmp_path, log_lines):
    """Look-alike single-shape drawings defeat the hash (false pairs), so synth data is checked by scene instead."""
    from vlmtune.config import load_config
    from vlmtune.data.prepare import prepare_data

    cfg = load_config(None, ["data.task=count", "data.n=40"])
    prepare_data(cfg, tmp_path)
    assert any("near-duplicate image check skipped for the shapes world" in m for m in log_lines)
    assert not (tmp_path / "data" / "near_duplicates.json").exists()


def test_identical_drawings_share_a_group(tmp_path, monkeypatch):
    import random

    import vlmtune.data.synth as synth

    real = synth.GENERATORS["count"]
    monkeypatch.setitem(synth.GENERATORS, "count", lambda rng, **kw: real(random.Random(7), **kw))  # one scene
    same = load_jsonl(synthesize("count", 5, tmp_path / "same", seed=0))
    assert len({e.group for e in same}) == 1 and same[0].group == "count-scene-000000"
    monkeypatch.setitem(synth.GENERATORS, "count", real)
    different = load_jsonl(synthesize("count", 5, tmp_path / "different", seed=0))
    assert [e.group for e in different] == [f"count-scene-{i:06d}" for i in range(5)]


def test_text_only_items_keep_their_own_groups(tmp_path):
    """Caption-only coreference items draw no scene: an empty drawing is not a shared one (it once merged them all)."""
    exs = load_jsonl(synthesize("mcq", 6, tmp_path / "coref", seed=0, options={"modality": "caption"}))
    assert all(not e.images for e in exs)
    assert len({e.group for e in exs}) == 6
