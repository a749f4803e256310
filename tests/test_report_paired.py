"""The report's group-aware statistics: clustered McNemar beside exact, paired cluster bootstraps, Holm, the minimum
detectable difference, comparisons of several runs; and the report fixes (shared confusion axes, the parse-failure
rate once, no empty panel)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

from tests.test_report import _write_eval, classify_runs
from vlmtune.cli import main
from vlmtune.errors import ConfigError, VlmtuneError
from vlmtune.report import compare_many, compare_runs, format_summary
from vlmtune.report.plots import plot_metric_bars, shared_confusions
from vlmtune.stats import holm, min_detectable_difference, paired_bootstrap
from vlmtune.tasks import build_task

N_COUNT = 60


@pytest.fixture
def grouped(tmp_path: Path) -> tuple[Path, Path]:
    """The classification runs of test_report, with the 12 examples in 4 groups of 3 (ex-000..002 in g0, ...)."""
    return classify_runs(tmp_path, group_size=3)


def test_groups_put_the_clustered_mcnemar_in_the_headline_with_exact_beside_it(grouped, tmp_path):
    summary = compare_runs(*grouped, tmp_path / "r")
    # By hand: per group b_g - c_g is g0: 3 fixed -> -3, g1: 3 fixed -> -3, g2: one fixed one broken -> 0, g3: 0.
    # Under random signs S = ±3 ±3 takes -6, 0, 0, 6, so P(|S| >= 6) = 2/4.
    assert summary["headline_test"]["key"] == "mcnemar_clustered"
    assert summary["mcnemar_clustered"]["p_value"] == pytest.approx(0.5)
    assert summary["mcnemar_clustered"]["statistic"] == -6 and summary["mcnemar_clustered"]["clusters"] == 4
    exact = binomtest(1, 8, 0.5).pvalue  # 1 broken of 8 discordant examples, each counted as independent
    assert summary["mcnemar"]["p_value"] == pytest.approx(exact)
    diff = summary["accuracy_difference"]
    assert (
        diff["clusters"] == 4
        and diff["method"].startswith("paired cluster bootstrap")
        and "over 4 groups" in diff["method"]
    )

    md = (tmp_path / "r" / "report.md").read_text()
    assert "**Headline test: clustered McNemar (exact sign-flip test over 4 groups)**, p = **0.5**" in md
    assert f"Exact McNemar test: 7 fixed, 1 broken, p = {exact:.3g} (treats every example as independent" in md
    assert "(n = 12 in 4 groups; 95% intervals:" in md
    # The parse-failure rate is recomputed from the rows over the groups, with its method named in the table.
    row = next(line for line in md.splitlines() if line.startswith("| parse_failure_rate |"))
    assert "(1/12)" in row and "12 in 4 groups" in row and "wilson with design effect" in row
    table = md.split("## Significance")[1]
    assert "clustered McNemar (exact sign-flip test over 4 groups): the headline test" in table
    assert "S = Σ(b_g − c_g) = -6" in table and "Holm" not in table  # one test: accuracy only

    text = format_summary(summary)
    assert "clustered McNemar p = 0.5 (4 groups)  <- headline test" in text
    assert "(ignores groups; for reference)" in text and "2000 resamples over 4 groups" in text
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<strong>Headline test: clustered McNemar (exact sign-flip test over 4 groups)</strong>" in html


def _count_run(d: Path, targets: list[int], offsets: list[int | None], label: str, groups: list[str]) -> Path:
    """An evaluation directory of the count task: rows, metrics.json from the task itself, a fingerprint."""
    rows = []
    for i, (t, o) in enumerate(zip(targets, offsets)):
        p = None if o is None else t + o
        rows.append(
            {
                "id": f"c{i:03d}",
                "prediction": "many" if p is None else str(p),
                "parsed": p,
                "parse_ok": p is not None,
                "target": t,
                "correct": p == t,
                "images": [],
                "prompt": "How many?",
                "group": groups[i],
            }
        )
    metrics = build_task("count").metrics(rows, n_boot=200, seed=0)
    d.mkdir(parents=True)
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "metrics.json").write_text(
        json.dumps({"task": "count", "task_options": {}, "label": label, "mode": "generate", "metrics": metrics})
    )
    (d / "fingerprint.json").write_text(
        json.dumps(
            {
                "model": "tiny",
                "model_hash": "m",
                "adapter": label,
                "task": "count",
                "prompt_hash": "p",
                "decoding": {"x": 1},
            }
        )
    )
    return d


@pytest.fixture
def count_runs(tmp_path: Path) -> list[Path]:
    """Three count runs over 60 examples in 20 groups of 3, increasingly accurate; the first has a parse failure."""
    rng = np.random.default_rng(7)
    targets = rng.integers(0, 6, N_COUNT).tolist()
    groups = [f"s{i // 3}" for i in range(N_COUNT)]
    dirs = []
    for name, right in (("a", 0.3), ("b", 0.6), ("c", 0.65)):
        offsets: list[int | None] = [0 if rng.random() < right else int(rng.integers(1, 4)) for _ in targets]
        if name == "a":
            offsets[0] = None
        dirs.append(_count_run(tmp_path / f"teach-{name}" / "finetuned", targets, offsets, "fine-tuned", groups))
    return dirs


def test_holm_adjusts_when_the_report_tests_several_things(count_runs, tmp_path):
    a, b = count_runs[:2]
    summary = compare_runs(a, b, tmp_path / "r", n_boot=1000)
    tests = summary["tests"]
    assert [t["metric"] for t in tests] == ["accuracy", "abs_error"]
    p1, p2 = tests[0]["p_value"], tests[1]["p_value"]
    lo, hi = sorted([p1, p2])  # Holm by hand: the smaller p times 2, the larger not below it
    expect = {lo: min(1.0, 2 * lo), hi: max(min(1.0, 2 * lo), hi)}
    assert [t["p_holm"] for t in tests] == pytest.approx([expect[p1], expect[p2]])

    # The per-example test resamples the 20 groups, over the 59 examples parsed in both runs.
    rows = [[json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()] for d in (a, b)]
    keep = [i for i in range(N_COUNT) if rows[0][i]["parse_ok"] and rows[1][i]["parse_ok"]]
    err = [[abs(rows[k][i]["parsed"] - rows[k][i]["target"]) for i in keep] for k in (0, 1)]
    grouped = paired_bootstrap(err[0], err[1], n_boot=1000, groups=[rows[0][i]["group"] for i in keep])
    assert tests[1]["n"] == 59 and tests[1]["clusters"] == 20
    assert tests[1]["ci"] == pytest.approx(grouped["ci"]) and tests[1]["p_value"] == pytest.approx(grouped["p_value"])
    assert tests[1]["ci"] != pytest.approx(paired_bootstrap(err[0], err[1], n_boot=1000)["ci"])  # groups change it

    md = (tmp_path / "r" / "report.md").read_text()
    table = md.split("## Significance")[1].split("\n## ")[0]
    assert "| p, Holm-adjusted (2 tests) |" in table and "Holm's adjusted p-values" in table
    assert f"| {tests[1]['p_value']:.3g} | {tests[1]['p_holm']:.3g} |" in table
    assert "— (the interval of the McNemar comparison)" in table
    assert "Holm-adjusted over 2 tests:" in format_summary(summary)
    # the runs share the label 'fine-tuned': their directories tell them apart
    assert summary["baseline"]["label"] == "teach-a/finetuned" and summary["candidate"]["label"] == "teach-b/finetuned"


def test_minimum_detectable_difference_is_stated_so_not_significant_reads_right(tmp_path):
    # 200 independent examples, 20 fixed and 20 broken: p = 1, and a difference below the MDE would go unseen.
    n, k = 200, 20
    base = [
        {
            "id": f"e{i}",
            "prediction": "x",
            "parsed": "x",
            "parse_ok": True,
            "target": "x",
            "correct": k <= i < 2 * k or i >= 3 * k,
        }
        for i in range(n)
    ]  # wrong on 0-19 and 40-59
    cand = [dict(r, prediction="y", correct=i < k or i >= 3 * k) for i, r in enumerate(base)]  # wrong on 20-59
    a, b = _write_eval(tmp_path / "a", base, label="a"), _write_eval(tmp_path / "b", cand, label="b")
    summary = compare_runs(a, b, tmp_path / "r")
    assert summary["mcnemar"]["b"] == k and summary["mcnemar"]["c"] == k and summary["mcnemar"]["p_value"] == 1.0
    mde = min_detectable_difference(n, 2 * k / n)  # Connor's formula, independent examples
    assert summary["mde"]["mde"] == pytest.approx(mde)
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"with n = {n} and 20.0% of the examples discordant" in md and f"**±{mde:.3f}**" in md
    assert "does not show the systems are equal" in md
    assert f"minimum detectable accuracy difference ±{mde:.3f} (80% power" in format_summary(summary)


def test_a_significant_result_gets_the_mde_without_the_caveat(count_runs, tmp_path):
    compare_runs(count_runs[0], count_runs[2], tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Minimum detectable difference: with n = 60 in 20 groups" in md
    assert "does not show the systems are equal" not in md


def test_parse_failure_panel_is_left_out_when_both_rates_are_zero():
    def entry(v: float) -> dict:
        return {"value": v, "ci": [max(0.0, v - 0.1), min(1.0, v + 0.1)], "n": 10, "clusters": 10}

    acc = {"name": "accuracy", "entries": [entry(0.3), entry(0.8)]}
    zero = {"name": "parse_failure_rate", "entries": [entry(0.0), entry(0.0)]}
    some = {"name": "parse_failure_rate", "entries": [entry(0.1), entry(0.0)]}
    labels = ["zero-shot", "fine-tuned"]

    def width(png: bytes) -> int:
        with Image.open(io.BytesIO(png)) as im:
            return im.size[0]

    assert plot_metric_bars([zero], labels) is None
    alone = plot_metric_bars([acc], labels)
    assert width(plot_metric_bars([acc, zero], labels)) == width(alone)  # no second (empty) panel
    assert width(plot_metric_bars([acc, some], labels)) > width(alone)  # a failure is worth a panel


def test_confusion_matrices_share_axes():
    # The zero-shot model answered up to 8, so its own matrix had gold rows 6-8 that no example has.
    zero_shot = {"labels": list(range(9)), "matrix": [[1] * 10 if g < 6 else [0] * 10 for g in range(9)]}
    tuned = {"labels": list(range(6)), "matrix": [[3 if p == g else 0 for p in range(7)] for g in range(6)]}
    panels = shared_confusions([("zero-shot", zero_shot), ("fine-tuned", tuned)])
    # one label axis for both panels and both axes: the union of gold and predicted labels of both runs
    union = [str(i) for i in range(9)]
    for (_, matrix, rows, cols), original in zip(panels, (zero_shot, tuned)):
        assert rows == union and cols == union + ["parse_failure"]
        assert sum(map(sum, matrix)) == sum(map(sum, original["matrix"]))  # nothing lost in re-indexing
        assert all(
            matrix[i][j] == original["matrix"][i][j]
            for i in range(len(original["matrix"]))
            for j in range(len(union))
            if j < len(original["matrix"][i]) - 1
        )  # same cells, same places
    assert panels[1][1][2][2] == 3 and panels[1][1][2][8] == 0  # fine-tuned: 3 right at gold 2, none said 8
    assert panels[1][1][7] == [0] * 10 and panels[1][1][8][9] == 0  # its rows 6-8 exist, empty
    assert panels[0][1][2][9] == 1  # zero-shot's parse failure at gold 2 stays in the last column

    # Numbers sort as numbers; other labels keep the order the runs give them.
    nums = shared_confusions([("a", {"labels": ["10", "2", "9"], "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]})])
    assert nums[0][3] == ["2", "9", "10"] and nums[0][1] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    korean = ["관련 없음", "마약 투약 사진", "마약 거래 대화"]
    a = {"labels": korean[:2], "matrix": [[2, 0, 0], [0, 2, 0]]}
    b = {"labels": korean, "matrix": [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0]]}
    ko = shared_confusions([("a", a), ("b", b)])
    assert ko[0][3] == ko[1][3] == korean + ["parse_failure"] and ko[0][2] == ko[1][2] == korean
    assert ko[0][1] == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]]  # a's matrix, the third label added empty


def test_compare_many_tests_every_pair_with_holm(count_runs, tmp_path, capsys):
    out = tmp_path / "abc"
    summary = compare_many(count_runs, out, n_boot=500)
    labels = ["teach-a/finetuned", "teach-b/finetuned", "teach-c/finetuned"]  # all say 'fine-tuned'
    assert [r["label"] for r in summary["runs"]] == labels
    tests = summary["tests"]
    assert [(tuple(t["pair"]), t["metric"]) for t in tests] == [
        ((x, y), m)
        for x, y in ((labels[0], labels[1]), (labels[0], labels[2]), (labels[1], labels[2]))
        for m in ("accuracy", "abs_error")
    ]
    assert [t["p_holm"] for t in tests] == pytest.approx(holm([t["p_value"] for t in tests]))
    assert all(t["test"].startswith("clustered McNemar") for t in tests if t["metric"] == "accuracy")
    for name in (
        "report.md",
        "report.html",
        "comparison.json",
        "predictions.html",
        "plots/metrics.png",
        "plots/confusion.png",
    ):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "## Pairwise tests" in md and "| p, Holm (6 tests) |" in md
    assert md.count(f"| {labels[0]} → {labels[1]} |") == 2
    assert "exact McNemar p = " in md and "(ignores groups)" in md  # exact beside the clustered test
    assert md.count("| parse_failure_rate |") == 1 and "(1/60)" in md
    page = (out / "predictions.html").read_text()
    assert all(f"<th>{label} right</th>" in page for label in labels) and page.count("<code>c0") == N_COUNT
    assert len(json.loads((out / "comparison.json").read_text())["pairs"]) == 3
    text = format_summary(summary)
    assert "6 paired test(s), p raw and Holm-adjusted" in text and text.count(", Holm ") == 6

    # each against a reference: 2 pairs; given labels name the runs
    names = ["(a) gold", "(b) reminder + gold", "(c) teacher"]
    ref = compare_many(count_runs, tmp_path / "ref", labels=names, reference=0, n_boot=200)
    assert [tuple(t["pair"]) for t in ref["tests"]] == [(names[0], names[1])] * 2 + [(names[0], names[2])] * 2
    with pytest.raises(ConfigError, match="one distinct label per run"):
        compare_many(count_runs, tmp_path / "x", labels=["a", "a", "b"])

    # the CLI takes three directories and names them with --label
    capsys.readouterr()
    args = ["compare", *map(str, count_runs), "--out", str(tmp_path / "cli")]
    assert main(args + sum((["--label", n] for n in names), []) + ["--reference", "(a) gold"]) == 0
    assert "(a) gold -> (c) teacher" in capsys.readouterr().out
    assert main(args + ["--label", "only-one"]) == 2


def test_compare_many_refuses_runs_that_differ_in_more_than_weights(count_runs, tmp_path):
    fp = json.loads((count_runs[2] / "fingerprint.json").read_text())
    fp["prompt_hash"] = "other"
    (count_runs[2] / "fingerprint.json").write_text(json.dumps(fp))
    with pytest.raises(VlmtuneError, match=r"teach-c/finetuned: prompt_hash is \"other\""):
        compare_many(count_runs, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    summary = compare_many(count_runs, tmp_path / "r", allow_mismatch=True, n_boot=200)
    assert summary["fingerprint_differences"] == [
        {"run": "teach-c/finetuned", "key": "prompt_hash", "reference": "p", "value": "other"}
    ]
    assert "differ from teach-a/finetuned in more than the model weights" in (tmp_path / "r" / "report.md").read_text()
