"""Metrics and statistics, each checked against an independent computation (scikit-learn, numpy, scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from vlmtune import stats
from vlmtune.metrics.classification import SCORE_NAMES, batch_scores, classification_metrics
from vlmtune.metrics.counting import count_metrics
from vlmtune.registry import METRICS, TASKS
from vlmtune.stats import bootstrap_ci, bootstrap_metric, mcnemar_exact, paired_bootstrap
from vlmtune.tasks import build_task

FAIL = "__fail__"  # the tests' own stand-in for a parse failure when calling sklearn


def _random_classification(seed: int, n: int = 200, fail_rate: float = 0.1):
    rng = np.random.default_rng(seed)
    labels = ["관련 없음", "마약 투약 사진", "마약 거래", "마약 실물"]
    gold = [labels[i] for i in rng.choice(4, size=n, p=[0.5, 0.2, 0.2, 0.1])]
    pred = []
    for g in gold:
        r = rng.random()
        pred.append(None if r < fail_rate else g if r < 0.6 else labels[rng.integers(4)])
    return labels, gold, pred


# ---------------------------------------------------------------- classification
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn(seed: int) -> None:
    labels, gold, pred = _random_classification(seed)
    m = classification_metrics(gold, pred, labels=labels, n_boot=200)
    y_pred = [FAIL if p is None else p for p in pred]
    present = sorted(set(gold) | {p for p in pred if p is not None})
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(gold, y_pred))
    assert m["accuracy"]["value"] == pytest.approx(np.mean([g == p for g, p in zip(gold, pred)]))
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(gold, y_pred, labels=present, average=avg, zero_division=0)
        assert m[f"{avg}_precision"]["value"] == pytest.approx(pr)
        assert m[f"{avg}_recall"]["value"] == pytest.approx(rc)
        assert m[f"{avg}_f1"]["value"] == pytest.approx(f1)
    report = classification_report(gold, y_pred, labels=present, output_dict=True, zero_division=0)
    for lab in present:
        assert m["per_class"][lab]["f1"] == pytest.approx(report[lab]["f1-score"])
        assert m["per_class"][lab]["recall"] == pytest.approx(report[lab]["recall"])
        assert m["per_class"][lab]["support"] == report[lab]["support"]
    cm = confusion_matrix(gold, y_pred, labels=labels + [FAIL])[: len(labels)]
    assert m["confusion"]["labels"] == labels
    assert m["confusion"]["pred_labels"] == labels + ["parse_failure"]
    assert m["confusion"]["matrix"] == cm.tolist()
    assert m["parse_failures"] == sum(p is None for p in pred)
    assert m["parse_failure_rate"]["value"] == pytest.approx(m["parse_failures"] / len(pred))
    for name in SCORE_NAMES:
        lo, hi = m[name]["ci"]
        assert lo <= m[name]["value"] + 1e-12 and m[name]["value"] <= hi + 1e-12, (name, m[name])
        assert m[name]["n"] == len(gold)


def test_parse_failures_lower_recall_not_precision() -> None:
    gold = ["a", "a", "b", "b"]
    m = classification_metrics(gold, ["a", None, "b", "b"], labels=["a", "b"], n_boot=50)
    assert m["accuracy"]["value"] == 0.75
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["b"]["precision"] == 1.0
    assert m["confusion"]["matrix"] == [[1, 0, 1], [0, 2, 0]]


def test_labels_never_seen_do_not_enter_the_average() -> None:
    # "c" is declared but neither gold nor predicted: it is a row of zeros, not a 0 in the macro average
    m = classification_metrics(["a", "b"], ["a", "b"], labels=["a", "b", "c"], n_boot=50)
    assert m["macro_f1"]["value"] == 1.0
    assert m["confusion"]["matrix"][2] == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", [0, 3])
def test_vectorised_bootstrap_scores_match_sklearn(seed: int) -> None:
    """The fast per-resample formulas behind the CIs equal sklearn on arbitrary resamples."""
    labels, gold, pred = _random_classification(seed, n=60, fail_rate=0.2)
    k = len(labels)
    t = np.array([labels.index(g) for g in gold])
    p = np.array([k if x is None else labels.index(x) for x in pred])
    idx = np.random.default_rng(seed).integers(0, len(t), size=(5, len(t)))
    got = batch_scores(t[idx], p[idx], k)
    for row, ix in zip(got, idx):
        tt, pp = t[ix], p[ix]
        present = sorted(set(tt.tolist()) | set(pp[pp < k].tolist()))
        want = [accuracy_score(tt, pp)]
        for avg in ("macro", "weighted"):
            want += precision_recall_fscore_support(tt, pp, labels=present, average=avg, zero_division=0)[:3]
        want.append(np.mean(pp == k))  # parse-failure rate
        np.testing.assert_allclose(row, want, atol=1e-12)


# ---------------------------------------------------------------- counting
def test_count_metrics_match_numpy_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 12, size=150).tolist()
    pred = [None if rng.random() < 0.1 else max(0, g + int(rng.integers(-2, 3))) for g in gold]
    m = count_metrics(gold, pred, n_boot=300)
    ok = [(g, p) for g, p in zip(gold, pred) if p is not None]
    g_ok = np.array([g for g, _ in ok])
    p_ok = np.array([p for _, p in ok])
    assert m["accuracy"]["value"] == pytest.approx(sum(g == p for g, p in ok) / len(gold))  # failures wrong
    assert m["off_by_one"]["value"] == pytest.approx(sum(abs(g - p) <= 1 for g, p in ok) / len(gold))
    assert m["mae"]["value"] == pytest.approx(np.mean(np.abs(g_ok - p_ok)))
    assert m["rmse"]["value"] == pytest.approx(np.sqrt(np.mean((g_ok - p_ok) ** 2)))
    assert m["accuracy"]["n"] == len(gold) and m["mae"]["n"] == m["rmse"]["n"] == len(ok)
    assert m["parse_failures"] == len(gold) - len(ok)
    assert m["parse_failure_rate"]["value"] == pytest.approx(m["parse_failures"] / len(gold))
    labels = sorted(set(gold) | set(p_ok.tolist()))
    conf = np.array(m["confusion"]["matrix"])
    assert m["confusion"]["labels"] == labels and m["confusion"]["pred_labels"][-1] == "parse_failure"
    assert conf[:, :-1].tolist() == confusion_matrix(g_ok, p_ok, labels=labels).tolist()
    fails_per_gold = [sum(1 for g, p in zip(gold, pred) if p is None and g == lab) for lab in labels]
    assert conf[:, -1].tolist() == fails_per_gold
    for name in ("accuracy", "off_by_one", "mae", "rmse"):
        lo, hi = m[name]["ci"]
        assert lo <= m[name]["value"] <= hi, (name, m[name])


def test_count_metrics_hand_case() -> None:
    m = count_metrics([3, 2, 5, 0, 4], [3, 3, None, 0, 7], n_boot=100)
    assert m["accuracy"]["value"] == pytest.approx(2 / 5)
    assert m["off_by_one"]["value"] == pytest.approx(3 / 5)
    assert m["mae"]["value"] == pytest.approx((0 + 1 + 0 + 3) / 4)
    assert m["rmse"]["value"] == pytest.approx(math.sqrt((0 + 1 + 0 + 9) / 4))
    assert m["parse_failures"] == 1


def test_count_all_failures_is_reported_not_crashing() -> None:
    m = count_metrics([1, 2], [None, None], n_boot=50)
    assert m["accuracy"]["value"] == 0.0 and m["parse_failures"] == 2
    assert math.isnan(m["mae"]["value"]) and m["mae"]["n"] == 0


def test_task_metrics_from_prediction_rows() -> None:
    rows = [
        {"id": str(i), "prediction": t, "parsed": v, "parse_ok": v is not None, "target": g, "correct": v == g}
        for i, (t, v, g) in enumerate([("3", 3, 3), ("세 개", 3, 4), ("?", None, 2)])
    ]
    m = build_task("count").metrics(rows, n_boot=50)
    assert m["accuracy"]["value"] == pytest.approx(1 / 3) and m["parse_failures"] == 1
    rows = [
        {"parsed": p, "parse_ok": p is not None, "target": g}
        for p, g in [("cat", "cat"), (None, "dog"), ("dog", "dog")]
    ]
    m = build_task("classify", {"labels": ["cat", "dog"]}).metrics(rows, n_boot=50)
    assert m["accuracy"]["value"] == pytest.approx(2 / 3) and m["parse_failures"] == 1
    m = build_task("caption").metrics(
        [
            {"parsed": "A red cat.", "parse_ok": True, "target": "a red cat"},
            {"parsed": "a dog", "parse_ok": True, "target": ["x", "a big dog"]},
        ]
    )
    assert m["exact_match"]["value"] == 0.5
    assert m["token_f1"]["value"] == pytest.approx((1 + 0.8) / 2)


def test_registries_hold_tasks_and_metrics() -> None:
    assert {"count", "classify", "caption"} <= set(TASKS.names())


# ---------------------------------------------------------------- McNemar
def test_mcnemar_hand_case() -> None:
    a = [False] * 10 + [True] * 5
    b = [True] * 10 + [True] * 5
    r = mcnemar_exact(a, b)
    assert (r["b"], r["c"], r["n_discordant"]) == (0, 10, 10)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)
    assert r["statistic"] == 0


def test_mcnemar_matches_scipy_binomtest() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.6
    b = rng.random(300) < 0.7
    r = mcnemar_exact(a.tolist(), b.tolist())
    nb, nc = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (r["b"], r["c"]) == (nb, nc)
    assert r["p_value"] == pytest.approx(binomtest(nb, nb + nc, 0.5).pvalue)
    assert mcnemar_exact(b.tolist(), a.tolist())["p_value"] == pytest.approx(r["p_value"])  # symmetric


def test_mcnemar_no_discordant_pairs() -> None:
    r = mcnemar_exact([True, False, True], [True, False, True])
    assert r["p_value"] == 1.0 and r["n_discordant"] == 0
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact([True], [True, False])


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_ci_is_deterministic_and_contains_the_mean() -> None:
    x = np.random.default_rng(5).normal(1.0, 2.0, size=80)
    ci = bootstrap_ci(x, seed=0)
    assert ci == bootstrap_ci(x, seed=0)
    assert ci != bootstrap_ci(x, seed=1)
    assert ci[0] < x.mean() < ci[1]
    # roughly the normal-theory interval for a mean: mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert ci[1] - ci[0] == pytest.approx(2 * half, rel=0.2)


def test_bootstrap_ci_edge_cases_and_stat_paths() -> None:
    assert all(math.isnan(v) for v in bootstrap_ci([4.0]))  # one example: no spread to build an interval from
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    x = np.arange(30, dtype=float)
    # a stat without axis= is applied per resample: same resamples, same interval
    assert bootstrap_ci(x, stat=lambda v: float(np.mean(v))) == pytest.approx(bootstrap_ci(x))
    lo, hi = bootstrap_ci(x, stat=np.median)
    assert lo <= np.median(x) <= hi


def test_bootstrap_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).normal(size=37)
    groups = [i // 3 for i in range(37)]
    whole = bootstrap_ci(x, n_boot=500)
    grouped = bootstrap_ci(x, n_boot=500, groups=groups)
    monkeypatch.setattr(stats.resample, "_MAX_CHUNK_ELEMS", 37 * 7)
    assert len(list(stats.group_counts(37, 500, seed=0))) > 1  # the resamples now come in several blocks
    assert bootstrap_ci(x, n_boot=500) == whole
    assert bootstrap_ci(x, n_boot=500, groups=groups) == grouped


def test_bootstrap_metric_with_sklearn_f1() -> None:
    labels, gold, pred = _random_classification(4, n=80, fail_rate=0.0)

    def macro_f1(t, p):
        return f1_score(t, p, average="macro", zero_division=0)

    lo, hi = bootstrap_metric(gold, pred, macro_f1, n_boot=200, seed=0)
    assert lo <= macro_f1(gold, pred) <= hi
    assert (lo, hi) == bootstrap_metric(gold, pred, macro_f1, n_boot=200, seed=0)
    # the vectorised path sees the same resamples
    acc = bootstrap_metric(gold, pred, lambda t, p: np.mean(np.asarray(t) == np.asarray(p)), n_boot=200)
    acc_vec = bootstrap_metric(gold, pred, lambda t, p: (t == p).mean(axis=1), n_boot=200, vectorized=True)
    assert acc == pytest.approx(acc_vec)


def test_paired_bootstrap_sign_and_null() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(200)
    better = base + 0.1 + rng.normal(0, 0.05, size=200)
    r = paired_bootstrap(base, better, n_boot=1000, seed=0)
    assert r["diff"] == pytest.approx(np.mean(better - base))
    assert r["diff"] > 0 and r["ci"][0] > 0 and r["p_value"] < 0.01
    rev = paired_bootstrap(better, base, n_boot=1000, seed=0)
    assert rev["diff"] < 0 and rev["ci"][1] < 0
    same = paired_bootstrap(base, base, n_boot=200)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    noise = paired_bootstrap(base, base + rng.normal(0, 0.05, size=200), n_boot=1000)
    assert noise["ci"][0] < 0 < noise["ci"][1] and noise["p_value"] > 0.05


# ---------------------------------------------------------------- every entry says how its interval was made
def _entries(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, dict) and "value" in v and "ci" in v}


def _dialog_rows() -> list[dict]:
    """Three shapes-world dialogues of 10 rounds (one group each), answered half right, with option scores."""
    import random

    from vlmtune.data.example import Example
    from vlmtune.data.synth.visdial import dialog_items, make_dialogue

    task, rows = build_task("dialog"), []
    for d in range(3):
        for r, item in enumerate(dialog_items(make_dialogue(random.Random(d))), start=1):
            meta = dict(item.meta)
            ex = Example(
                id=f"d{d}-r{r}",
                task="dialog",
                messages=item.messages,
                images=["x.png"],
                target=item.target,
                options=item.options,
                group=meta.pop("group"),
                meta=meta,
            )
            text = ex.target["answer"] if r % 2 else "no idea"
            p = task.parse(text, ex)
            scores = [float((j * 7 + r) % 13) for j in range(len(ex.options))]
            rows.append(
                {
                    "id": ex.id,
                    "prediction": text,
                    "parsed": p.value,
                    "parse_ok": p.ok,
                    "target": ex.target,
                    "correct": bool(p.ok and task.correct(p.value, ex)),
                    "scores": scores,
                    "group": ex.group,
                }
            )
    return rows


def _task_rows() -> dict[str, tuple[dict, list[dict]]]:
    """Prediction rows of every task, four examples to a group."""
    rng = np.random.default_rng(0)
    count = [
        {
            "id": str(i),
            "parsed": None if i % 9 == 0 else int(g + rng.integers(-1, 2)),
            "target": int(g),
            "group": f"s{i // 4}",
        }
        for i, g in enumerate(rng.integers(0, 6, size=40))
    ]
    for r in count:
        r["parse_ok"] = r["parsed"] is not None
    labels = ["cat", "dog", "cow"]
    classify = [
        {"id": str(i), "parsed": labels[(i * 5) % 3] if i % 7 else None, "target": labels[i % 3], "group": f"s{i // 4}"}
        for i in range(40)
    ]
    for r in classify:
        r["parse_ok"] = r["parsed"] is not None
    caption = [
        {
            "id": str(i),
            "parsed": "a red cat" if i % 2 else "a dog",
            "parse_ok": True,
            "target": "a red cat",
            "group": f"s{i // 4}",
        }
        for i in range(40)
    ]
    mcq = [
        {
            "id": str(i),
            "prediction": "B",
            "parsed": 1 if i % 3 else None,
            "parse_ok": bool(i % 3),
            "target": i % 4,
            "options": ["w", "x", "y", "z"],
            "option_photo": [0, 0, 1, 1],
            "group": f"s{i // 4}",
        }
        for i in range(40)
    ]
    return {
        "count": ({}, count),
        "classify": ({"labels": labels}, classify),
        "caption": ({}, caption),
        "mcq": ({}, mcq),
        "dialog": ({}, _dialog_rows()),
    }


@pytest.mark.parametrize("name", ["count", "classify", "caption", "mcq", "dialog"])
def test_every_entry_names_its_method_n_and_clusters(name: str) -> None:
    options, rows = _task_rows()[name]
    metrics = build_task(name, options).metrics(rows, n_boot=200, seed=0)
    entries = _entries(metrics)
    assert len(entries) >= 2
    for key, e in entries.items():
        assert {"value", "ci", "n", "clusters", "method"} <= set(e), (key, e)
        if e["n"] == 0:
            continue
        assert 0 < e["clusters"] < e["n"], (key, e)  # the rows share groups: fewer clusters than rows
        assert e["method"].startswith(("wilson with design effect", "cluster bootstrap")), (key, e)
        assert e["ci"][0] <= e["value"] + 1e-12 and e["value"] <= e["ci"][1] + 1e-12, (key, e)
    proportions = {
        "count": ["accuracy", "off_by_one", "parse_failure_rate"],
        "classify": ["accuracy"],
        "caption": ["exact_match"],
        "mcq": ["accuracy", "photo_accuracy", "exact_match"],
        "dialog": ["exact_match", "r@1", "r@10", "stripped_fraction"],
    }[name]
    for key in proportions:
        assert entries[key]["method"].startswith("wilson"), (key, entries[key])
    others = {
        "count": ["mae", "rmse"],
        "classify": ["macro_f1"],
        "caption": ["token_f1"],
        "mcq": [],
        "dialog": ["mrr", "ndcg", "bleu", "rougeL"],
    }[name]
    for key in others:
        assert entries[key]["method"].startswith("cluster bootstrap"), (key, entries[key])
    # without groups every example is its own: plain Wilson and the example bootstrap, same values
    flat = build_task(name, options).metrics(
        [{k: v for k, v in r.items() if k != "group"} | {"id": f"u{i}"} for i, r in enumerate(rows)], n_boot=200, seed=0
    )
    for key, e in _entries(flat).items():
        assert e["clusters"] == e["n"] and e["value"] == pytest.approx(entries[key]["value"], nan_ok=True)
        assert e["method"] in ("wilson", "bootstrap (expanded percentile, 200 resamples)"), (key, e)


def test_counting_intervals_changed_only_where_the_method_did() -> None:
    """Accuracy 299/300 and 300/300 now read as Wilson intervals, not collapsed percentile ones."""
    m = count_metrics([1] * 300, [1] * 300, n_boot=200)
    assert m["accuracy"]["ci"] == pytest.approx([0.98736, 1.0], abs=1e-5) and m["off_by_one"]["ci"][1] == 1.0
    assert m["mae"]["value"] == 0.0 and m["mae"]["ci"] == [0.0, 0.0]  # every error is 0: no spread to show
    m = count_metrics([1] * 300, [1] * 299 + [2], n_boot=200)
    assert [round(x, 3) for x in m["accuracy"]["ci"]] == [0.981, 0.999]
