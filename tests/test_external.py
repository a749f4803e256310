"""`vlmtune score`: predictions made elsewhere get the same metrics, and bad files fail loudly."""

from __future__ import annotations

import json

import pytest

from vlmtune.cli import main
from vlmtune.data.example import load_jsonl
from vlmtune.data.synth import synthesize
from vlmtune.errors import DataError
from vlmtune.eval.external import read_predictions, score_predictions
from vlmtune.tasks import build_task


@pytest.fixture()
def count_file(tmp_path):
    return synthesize("count", 12, tmp_path / "d", seed=3)


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_text_predictions_are_parsed_like_generations(tmp_path, count_file):
    exs = load_jsonl(count_file)
    answers = []
    for i, ex in enumerate(exs):
        if i % 3 == 0:
            answers.append(f"There are {ex.target} shapes.")  # right, verbose
        elif i % 3 == 1:
            answers.append(str(ex.target + 1))  # wrong by one
        else:
            answers.append("I cannot tell")  # parse failure
    preds = _write(tmp_path / "p.jsonl", [{"id": ex.id, "prediction": a} for ex, a in zip(exs, answers)])
    res = score_predictions(build_task("count"), exs, preds, tmp_path / "out")
    m = res["metrics"]
    assert m["accuracy"]["value"] == pytest.approx(4 / 12)
    assert m["parse_failures"] == 4 and m["off_by_one"]["value"] == pytest.approx(8 / 12)
    assert res["mode"] == "external-text"
    rows = [json.loads(l) for l in (tmp_path / "out/predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == answers


def test_option_scores_pick_the_best_option(tmp_path):
    exs = load_jsonl(synthesize("classify", 8, tmp_path / "d"))
    rows = []
    for i, ex in enumerate(exs):
        sc = [0.0] * len(ex.options)
        sc[ex.options.index(ex.target) if i < 6 else (ex.options.index(ex.target) + 1) % 4] = 1.0
        rows.append({"id": ex.id, "scores": sc})
    res = score_predictions(build_task("classify"), exs, _write(tmp_path / "s.jsonl", rows), tmp_path / "o")
    assert res["metrics"]["accuracy"]["value"] == pytest.approx(6 / 8)
    assert res["metrics"]["parse_failures"] == 0


def test_missing_duplicate_and_malformed_predictions_are_errors(tmp_path, count_file):
    exs = load_jsonl(count_file)
    some = _write(tmp_path / "a.jsonl", [{"id": ex.id, "prediction": "1"} for ex in exs[:-1]])
    with pytest.raises(DataError, match="1 example\\(s\\) have no prediction"):
        read_predictions(some, exs)
    dup = _write(tmp_path / "b.jsonl", [{"id": exs[0].id, "prediction": "1"}] * 2)
    with pytest.raises(DataError, match="duplicate id"):
        read_predictions(dup, exs)
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": "x", "prediction": "1"}\n{oops\n')
    with pytest.raises(DataError, match=":2"):
        read_predictions(bad, exs)
    mixed = _write(tmp_path / "m.jsonl", [{"id": exs[0].id, "prediction": "1"}, {"id": exs[1].id, "scores": [1]}])
    with pytest.raises(DataError, match="mixes"):
        read_predictions(mixed, exs)


def test_score_verb(tmp_path, count_file, capsys):
    exs = load_jsonl(count_file)
    preds = _write(tmp_path / "p.jsonl", [{"id": ex.id, "prediction": str(ex.target)} for ex in exs])
    assert (
        main(
            [
                "score",
                "--task",
                "count",
                "--data",
                str(count_file),
                "--predictions",
                str(preds),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "o/metrics.json").read_text())
    assert m["metrics"]["accuracy"]["value"] == 1.0 and m["n"] == 12
    assert json.loads((tmp_path / "o/fingerprint.json").read_text())["backend"] == "external"


def test_visdial_submission_ranks(tmp_path):
    exs = load_jsonl(synthesize("dialog", 6, tmp_path / "d"))
    sub = []
    for i, ex in enumerate(exs):
        gt, k = ex.target["gt_index"], len(ex.options)
        order = [gt] + [j for j in range(k) if j != gt]  # gold ranked first ...
        if i >= 4:
            order = order[1:] + [gt]  # ... except the last two: gold last
        ranks = [0] * k
        for pos, j in enumerate(order, start=1):
            ranks[j] = pos
        sub.append({"image_id": ex.meta["dialog_id"], "round_id": ex.target["round"], "ranks": ranks})
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(sub))
    res = score_predictions(build_task("dialog"), exs, path, tmp_path / "o")
    m = res["metrics"]
    assert m["r@1"]["value"] == pytest.approx(4 / 6) and m["mean_rank"]["value"] == pytest.approx((4 + 2 * 100) / 6)
    assert m["mrr"]["value"] == pytest.approx((4 + 2 / 100) / 6)
    assert res["mode"] == "external-scores"
    # The ranks came from the submission file, not from a model's log-likelihoods, and every label says so.
    assert m["ranking_mode"] == "external (VisDial ranks in submission.json)"
    assert m["metric_modes"]["r@1"] == "option scores: external (VisDial ranks in submission.json)"
    assert res["decoding"]["scored_from"] == "VisDial ranks in submission.json"
    rows = [json.loads(line) for line in (tmp_path / "o/predictions.jsonl").read_text().splitlines()]
    assert {r["scores_from"] for r in rows} == {"VisDial ranks in submission.json"}

    # A report comparing it with other scores says where each run's scores came from, and never "loglik".
    other = tmp_path / "other.jsonl"
    _write(
        other,
        [
            {"id": ex.id, "scores": [1.0 if j == ex.target["gt_index"] else 0.0 for j in range(len(ex.options))]}
            for ex in exs
        ],
    )
    score_predictions(build_task("dialog"), exs, other, tmp_path / "o2")
    from vlmtune.report import compare_runs

    compare_runs(tmp_path / "o", tmp_path / "o2", tmp_path / "cmp", n_boot=100)
    md = (tmp_path / "cmp/report.md").read_text()
    assert "external-scores (VisDial ranks in submission.json)" in md
    assert "external-scores (option scores in other.jsonl)" in md
    assert "option scores: external (option scores in other.jsonl)" in md
    assert "from option scores: external (VisDial ranks in submission.json)" in md and "loglik" not in md
    assert "log-likelihood" not in md

    bad = [dict(sub[0], ranks=[1] * len(sub[0]["ranks"]))] + sub[1:]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="not a permutation"):
        read_predictions(path, exs)
