"""compare_runs on two hand-made evaluation directories: files, numbers, fairness checks, plots."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from scipy.stats import binomtest

from vlmtune.errors import DataError, VlmtuneError
from vlmtune.report import FLIP_CAP, THUMB_PX, compare_runs, format_summary

LABELS = ["cat", "dog"]
FINGERPRINT = {
    "model": "tiny-vlm",
    "model_hash": "aaa",
    "adapter": None,
    "adapter_hash": None,
    "task": "classify",
    "data_hash": "d1",
    "prompt_hash": "p1",
    "chat_template_hash": "t1",
    "image_size": 32,
    "decoding": {"max_new_tokens": 8, "do_sample": False},
    "backend": "hf",
    "versions": {"transformers": "4.0", "vlmtune": "0.1.0"},
}
# (baseline correct, candidate correct) per example: 7 fixed, 1 broken, 2 both right, 2 both wrong.
OUTCOMES = [(False, True)] * 7 + [(True, False)] + [(True, True)] * 2 + [(False, False)] * 2


def _image(path: Path, color: tuple[int, int, int]) -> str:
    Image.new("RGB", (8, 8), color).save(path)
    return str(path.resolve())


def _classify_row(i: int, correct: bool, image: str, *, parse_fail: bool = False) -> dict:
    target = LABELS[i % 2]
    pred = target if correct else LABELS[(i + 1) % 2]
    if parse_fail:
        return {
            "id": f"ex-{i:03d}",
            "prediction": "a furry animal",
            "parsed": None,
            "parse_ok": False,
            "target": target,
            "correct": False,
            "images": [image],
            "prompt": "<image>\nCat or dog?",
        }
    return {
        "id": f"ex-{i:03d}",
        "prediction": f"It is a {pred}.",
        "parsed": pred,
        "parse_ok": True,
        "target": target,
        "correct": correct,
        "images": [image],
        "prompt": "<image>\nCat or dog?",
    }


def _confusion(rows: list[dict]) -> dict:
    cols = LABELS + ["parse_failure"]
    matrix = [[0] * len(cols) for _ in LABELS]
    for r in rows:
        matrix[LABELS.index(r["target"])][cols.index(r["parsed"] if r["parse_ok"] else "parse_failure")] += 1
    return {"labels": cols, "matrix": matrix}


def _write_eval(
    d: Path,
    rows: list[dict],
    *,
    label: str,
    task: str = "classify",
    adapter: str | None = None,
    fingerprint: dict | None = None,
    extras: dict | None = None,
    mode: str = "generate",
) -> Path:
    d.mkdir(parents=True)
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    n, k = len(rows), sum(r["correct"] for r in rows)
    fails = sum(not r["parse_ok"] for r in rows)
    metrics = {
        "accuracy": {"value": k / n, "ci": [max(0.0, k / n - 0.25), min(1.0, k / n + 0.25)], "n": n},
        "macro_f1": {"value": k / n * 0.9, "ci": [0.0, 1.0], "n": n},
        "parse_failures": fails,
        "parse_failure_rate": fails / n,
        **(extras or {}),
    }
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "task": task,
                "label": label,
                "model": "tiny-vlm",
                "adapter": adapter,
                "n": n,
                "mode": mode,
                "metrics": metrics,
            }
        )
    )
    (d / "fingerprint.json").write_text(json.dumps({**FINGERPRINT, "task": task, **(fingerprint or {})}))
    return d


def classify_runs(tmp_path: Path, group_size: int = 1) -> tuple[Path, Path]:
    """A zero-shot and a fine-tuned classification run over the same 12 examples (one baseline parse failure);
    with group_size > 1 the rows carry groups of that many consecutive examples."""
    (tmp_path / "img").mkdir()
    imgs = [_image(tmp_path / "img" / f"{i}.png", (20 * i, 100, 255 - 20 * i)) for i in range(len(OUTCOMES))]
    base = [_classify_row(i, a, imgs[i], parse_fail=(i == 0)) for i, (a, _) in enumerate(OUTCOMES)]
    cand = [_classify_row(i, b, imgs[i]) for i, (_, b) in enumerate(OUTCOMES)]
    if group_size > 1:
        for i, (ra, rb) in enumerate(zip(base, cand)):
            ra["group"] = rb["group"] = f"g{i // group_size}"
    a = _write_eval(tmp_path / "zero_shot", base, label="zero-shot", extras={"confusion": _confusion(base)})
    b = _write_eval(
        tmp_path / "finetuned",
        cand,
        label="fine-tuned",
        adapter="runs/x/adapter",
        fingerprint={"adapter": "runs/x/adapter", "adapter_hash": "bbb"},
        extras={"confusion": _confusion(cand)},
    )
    return a, b


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return classify_runs(tmp_path)


def test_report_files_numbers_and_flips(runs, tmp_path):
    out = tmp_path / "report"
    summary = compare_runs(*runs, out)

    for name in ("report.md", "report.html", "comparison.json", "plots/metrics.png", "plots/confusion.png"):
        assert (out / name).is_file(), name
    assert not (out / "plots" / "loss.png").exists()  # no history given
    assert not (out / "plots" / "count_errors.png").exists()  # string targets: not a counting task

    # McNemar computed independently: discordant pairs only, two-sided exact binomial at 1/2.
    fixed, broken = OUTCOMES.count((False, True)), OUTCOMES.count((True, False))
    p = binomtest(broken, fixed + broken, 0.5).pvalue
    html_text = (out / "report.html").read_text()
    assert f"p = {p:.3g}" in html_text
    assert summary["mcnemar"]["p_value"] == pytest.approx(p)
    assert {summary["mcnemar"]["b"], summary["mcnemar"]["c"]} == {fixed, broken}
    still_wrong = OUTCOMES.count((False, False))
    assert summary["flips"] == {"fixed": fixed, "broken": broken, "still_wrong": still_wrong}

    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["flips"]["fixed"]["ids"] == [f"ex-{i:03d}" for i, o in enumerate(OUTCOMES) if o == (False, True)]
    assert comparison["flips"]["broken"]["ids"] == [f"ex-{i:03d}" for i, o in enumerate(OUTCOMES) if o == (True, False)]
    assert comparison["flips"]["still_wrong"]["ids"] == [
        f"ex-{i:03d}" for i, o in enumerate(OUTCOMES) if o == (False, False)
    ]
    acc_a = sum(a for a, _ in OUTCOMES) / len(OUTCOMES)
    acc_b = sum(b for _, b in OUTCOMES) / len(OUTCOMES)
    assert summary["baseline"]["accuracy"]["value"] == pytest.approx(acc_a)
    assert summary["candidate"]["accuracy"]["value"] == pytest.approx(acc_b)
    assert summary["accuracy_difference"]["diff"] == pytest.approx(acc_b - acc_a)
    lo, hi = summary["accuracy_difference"]["ci"]
    assert lo <= acc_b - acc_a <= hi
    # metrics.json's own parse_failure_rate and the report's count of the rows are one row, not two
    assert [m["name"] for m in comparison["metrics"]] == ["accuracy", "macro_f1", "parse_failure_rate"]
    assert summary["fingerprint_differences"] == []  # adapter / adapter_hash are weight keys

    md = (out / "report.md").read_text()
    assert md.count("| parse_failure_rate |") == 1 and "parse failure rate" not in md
    assert "(1/12)" in md and "(0/12)" in md
    assert "generate" in md  # the scoring mode is stated
    assert "It is a dog." in md and "a furry animal" in md  # prediction texts of flipped examples
    assert f"### Still wrong in both: {still_wrong} example(s)" in md
    assert "![metrics](plots/metrics.png)" in md

    # Every prediction, linked from both documents.
    assert "[predictions.html](predictions.html)" in md and '<a href="predictions.html">' in html_text
    page = (out / "predictions.html").read_text()
    assert all(f"<code>ex-{i:03d}</code>" in page for i in range(len(OUTCOMES)))
    assert page.count("✓") == sum(a for a, _ in OUTCOMES) + sum(b for _, b in OUTCOMES)
    assert "a furry animal (parse failure)" in page


def test_html_is_self_contained_with_pixelated_thumbnails(runs, tmp_path):
    out = tmp_path / "report"
    compare_runs(*runs, out)
    html_text = (out / "report.html").read_text()
    assert "<style>" in html_text
    assert not re.search(r"""src=['"](?!data:)""", html_text), "every image must be embedded"
    thumbs = re.findall(r'class="thumb" src="data:image/png;base64,([^"]+)"', html_text)
    assert len(thumbs) == len(OUTCOMES) - OUTCOMES.count((True, True))  # fixed, broken and still wrong
    with Image.open(io.BytesIO(base64.b64decode(thumbs[0]))) as im:
        assert max(im.size) == THUMB_PX
        assert len(im.getcolors(maxcolors=1000)) == 1  # nearest-neighbour: no blended colours


def test_fingerprint_mismatch_refused_then_listed(runs, tmp_path):
    base, cand = runs
    fp = json.loads((cand / "fingerprint.json").read_text())
    fp["image_size"] = 64
    (cand / "fingerprint.json").write_text(json.dumps(fp))

    with pytest.raises(VlmtuneError) as err:
        compare_runs(base, cand, tmp_path / "r1")
    msg = str(err.value)
    assert "image_size" in msg and "32" in msg and "64" in msg and "--allow-mismatch" in msg
    assert not (tmp_path / "r1").exists()  # refused before writing anything

    summary = compare_runs(base, cand, tmp_path / "r2", allow_mismatch=True)
    assert summary["fingerprint_differences"] == [{"key": "image_size", "baseline": 32, "candidate": 64}]
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "`image_size`" in md.split("## Runs")[0]  # listed prominently, above everything else
    assert "image_size" in format_summary(summary)


def test_nested_fingerprint_and_mode_differences_are_named(runs, tmp_path):
    base, cand = runs
    fp = json.loads((cand / "fingerprint.json").read_text())
    fp["decoding"]["max_new_tokens"] = 32
    (cand / "fingerprint.json").write_text(json.dumps(fp))
    m = json.loads((cand / "metrics.json").read_text())
    m["mode"] = "loglik"
    (cand / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(VlmtuneError, match=r"decoding\.max_new_tokens(.|\n)*mode"):
        compare_runs(base, cand, tmp_path / "r")


def test_different_ids_raise_data_error(runs, tmp_path):
    base, cand = runs
    lines = (cand / "predictions.jsonl").read_text().splitlines()
    row = json.loads(lines[-1])
    row["id"] = "ex-999"
    (cand / "predictions.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(row)]) + "\n")
    with pytest.raises(DataError, match=r"ex-011(.|\n)*ex-999"):
        compare_runs(base, cand, tmp_path / "r")


def test_missing_file_names_it(runs, tmp_path):
    base, cand = runs
    (base / "metrics.json").unlink()
    with pytest.raises(DataError, match="metrics.json"):
        compare_runs(base, cand, tmp_path / "r")


def test_history_produces_loss_plot(runs, tmp_path):
    history = [{"loss": 2.0 - 0.1 * s, "learning_rate": 1e-4, "epoch": s / 10, "step": s} for s in range(1, 11)]
    history += [
        {"eval_loss": 1.5, "eval_accuracy": 0.6, "eval_runtime": 1.0, "epoch": 0.5, "step": 5},
        {"eval_loss": 1.1, "eval_accuracy": 0.8, "eval_runtime": 1.0, "epoch": 1.0, "step": 10},
        {"train_loss": 1.5, "train_runtime": 9.0, "epoch": 1.0, "step": 10},
    ]
    out = tmp_path / "report"
    compare_runs(*runs, out, history=history)
    assert (out / "plots" / "loss.png").is_file()
    assert "plots/loss.png" in (out / "report.md").read_text()


def test_counting_task_gets_error_plot(tmp_path):
    targets = [1, 2, 3, 4, 5, 6]
    base = [
        {
            "id": str(i),
            "prediction": "many" if i == 0 else str(t + 2),
            "parsed": None if i == 0 else t + 2,
            "parse_ok": i != 0,
            "target": t,
            "correct": False,
            "images": [],
            "prompt": "How many?",
        }
        for i, t in enumerate(targets)
    ]
    cand = [
        {
            "id": str(i),
            "prediction": str(t),
            "parsed": t,
            "parse_ok": True,
            "target": t,
            "correct": True,
            "images": [],
            "prompt": "How many?",
        }
        for i, t in enumerate(targets)
    ]
    a = _write_eval(tmp_path / "a", base, label="zero-shot", task="count")
    b = _write_eval(tmp_path / "b", cand, label="fine-tuned", task="count")
    summary = compare_runs(a, b, tmp_path / "r")
    assert (tmp_path / "r" / "plots" / "count_errors.png").is_file()
    assert summary["flips"] == {"fixed": 6, "broken": 0, "still_wrong": 0}
    # The continuous per-example value (absolute error) gets a paired bootstrap over the 5 examples parsed in
    # both runs: baseline error 2 everywhere, candidate 0.
    paired = json.loads((tmp_path / "r" / "comparison.json").read_text())["paired_continuous"]
    ae = next(p for p in paired if p["name"] == "abs_error")
    assert ae["n"] == 5 and ae["baseline"] == 2.0 and ae["candidate"] == 0.0 and ae["diff"] == -2.0
    assert ae["method"] == "paired bootstrap (expanded percentile, 2000 resamples)" and ae["clusters"] == 5
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| mean abs_error: 2.000 → 0.000 | paired bootstrap (expanded percentile, 2000 resamples) | -2.000 [" in md


def test_count_section_is_in_both_documents(tmp_path):
    # The counting-error section comes from CountTask.report_sections, rebuilt from metrics.json's task.
    base = [
        {
            "id": str(i),
            "prediction": "many" if i == 0 else str(t + 2),
            "parsed": None if i == 0 else t + 2,
            "parse_ok": i != 0,
            "target": t,
            "correct": False,
            "images": [],
            "prompt": "How many?",
        }
        for i, t in enumerate([1, 2, 3, 4, 5, 6])
    ]
    cand = [dict(r, prediction=str(r["target"] - 1), parsed=r["target"] - 1, parse_ok=True) for r in base]
    a = _write_eval(tmp_path / "a", base, label="zero-shot", task="count")
    b = _write_eval(tmp_path / "b", cand, label="fine-tuned", task="count")
    compare_runs(a, b, tmp_path / "r")
    md, html_text = (tmp_path / "r" / "report.md").read_text(), (tmp_path / "r" / "report.html").read_text()
    assert "## Counting errors" in md and "<h2>Counting errors</h2>" in html_text
    # MAE and bias over the parsed answers; the parse failure is counted apart.
    assert "| zero-shot | 2.000 | +2.000 | 5 | 1 |" in md and "| fine-tuned | 1.000 | -1.000 | 6 | 0 |" in md
    assert "<tr><td>zero-shot</td><td>2.000</td><td>+2.000</td><td>5</td><td>1</td></tr>" in html_text
    assert "![count_errors](plots/count_errors.png)" in md and 'alt="count_errors" src="data:' in html_text


def test_option_index_targets_get_no_error_plot(tmp_path):
    # Multiple choice also has integer targets (option indices); "prediction - target" would be meaningless.
    rows = [
        {
            "id": str(i),
            "prediction": "B",
            "parsed": 1,
            "parse_ok": True,
            "target": i % 4,
            "correct": i % 4 == 1,
            "images": [],
            "prompt": "Which caption?",
        }
        for i in range(8)
    ]
    a = _write_eval(tmp_path / "a", rows, label="zero-shot", task="mcq")
    b = _write_eval(tmp_path / "b", rows, label="fine-tuned", task="mcq")
    summary = compare_runs(a, b, tmp_path / "r")
    assert not (tmp_path / "r" / "plots" / "count_errors.png").exists()
    assert summary["mcnemar"]["p_value"] == 1.0 and summary["flips"] == {"fixed": 0, "broken": 0, "still_wrong": 6}


def test_flip_tables_are_capped_but_totals_stated(tmp_path):
    n = FLIP_CAP + 6
    base = [
        {
            "id": f"e{i}",
            "prediction": "x",
            "parsed": "x",
            "parse_ok": True,
            "target": "y",
            "correct": False,
            "images": [],
            "prompt": "?",
        }
        for i in range(n)
    ]
    cand = [dict(r, prediction="y", parsed="y", correct=True) for r in base]
    a = _write_eval(tmp_path / "a", base, label="a")
    b = _write_eval(tmp_path / "b", cand, label="b")
    compare_runs(a, b, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"{n} example(s), showing the first {FLIP_CAP}" in md
    assert len(re.findall(r"^\| e\d+ \|", md, flags=re.M)) == FLIP_CAP


def test_format_summary(runs, tmp_path):
    summary = compare_runs(*runs, tmp_path / "r")
    text = format_summary(summary)
    assert "zero-shot" in text and "fine-tuned" in text
    assert f"{summary['mcnemar']['p_value']:.3g}" in text
    assert "McNemar exact" in text and "<- headline test" in text  # no group repeats: exact McNemar is the test
    assert "paired bootstrap (expanded percentile, 2000 resamples)" in text  # the difference's interval, named
    assert f"minimum detectable accuracy difference ±{summary['mde']['mde']:.3f}" in text
    assert "Holm" not in text  # one test only: accuracy (classify defines no per-example values)
    assert summary["report_html"] in text


def test_korean_labels_render_without_missing_glyphs():
    import warnings

    import matplotlib

    from vlmtune.report.plots import hangul_font_families, plot_confusions

    labels = ["관련 없음", "마약 투약 사진", "마약 거래 대화", "마약 실물"]
    conf = {
        "labels": labels,
        "pred_labels": labels + ["parse_failure"],
        "matrix": [[5, 1, 0, 0, 0], [0, 4, 1, 0, 1], [0, 0, 6, 0, 0], [1, 0, 0, 3, 0]],
    }
    assert "NanumGothic" in hangul_font_families()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with matplotlib.rc_context({"font.family": hangul_font_families()}):
            png = plot_confusions([("fine-tuned", conf)])
    assert png and png.startswith(b"\x89PNG")
    assert not [w for w in caught if "missing from" in str(w.message)], [str(w.message) for w in caught]
