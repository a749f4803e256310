"""Trackers get the results: test metrics with CIs, McNemar and every prediction, read back from TensorBoard's
event files and from MLflow's store (offline: a local file store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmtune.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_results_reach_tensorboard_and_mlflow(tmp_path, micro_model_dir, monkeypatch, capsys):
    mlflow = pytest.importorskip("mlflow", reason="the MLflow case needs mlflow (the test extra has mlflow-skinny)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = (tmp_path / "mlruns").as_uri()  # a local file store: nothing leaves the machine
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no SQL store; the file store works
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    assert (
        main(
            [
                "run",
                str(ROOT / "recipes" / "quickstart.yaml"),
                f"output_dir={tmp_path}",
                "name=tracked",
                f"model.name={micro_model_dir}",
                "data.n=64",
                "train.max_steps=3",
                "train.batch_size=8",
                "train.logging_steps=1",
                "eval.n_boot=100",
                "eval.max_new_tokens=4",
                "train.report_to=[tensorboard,mlflow]",
                "-q",
            ]
        )
        == 0
    )
    run = tmp_path / "tracked"
    metrics = json.loads((run / "finetuned" / "metrics.json").read_text())["metrics"]
    comparison = json.loads((run / "comparison.json").read_text())
    test_ids = [json.loads(l)["id"] for l in (run / "data" / "test.jsonl").read_text().splitlines()]

    acc = EventAccumulator(str(run / "logs"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    scalars = acc.Tags()["scalars"]
    value = acc.Scalars("test/finetuned/accuracy")[-1]
    assert value.value == pytest.approx(metrics["accuracy"]["value"]) and value.step == 3
    assert acc.Scalars("test/finetuned/accuracy_ci_low")[-1].value == pytest.approx(metrics["accuracy"]["ci"][0])
    assert acc.Scalars("test/mcnemar/p_value")[-1].value == pytest.approx(comparison["mcnemar"]["p_value"], rel=1e-5)
    assert "test/zero_shot/mae" in scalars and "test/accuracy_difference_ci_high" in scalars
    table = acc.Tensors("test/predictions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert all(i in table for i in test_ids) and "finetuned_correct" in table

    client = mlflow.tracking.MlflowClient()
    [found] = mlflow.search_runs(search_all_experiments=True, output_format="list")  # one run: training's own
    data = client.get_run(found.info.run_id).data
    assert found.info.run_name == "tracked"
    assert "train_loss" in data.metrics or "loss" in data.metrics  # what training logged
    assert data.metrics["test/finetuned/accuracy"] == pytest.approx(metrics["accuracy"]["value"])
    assert data.metrics["test/mcnemar/fixed"] == comparison["mcnemar"]["c"]
    local = client.download_artifacts(found.info.run_id, "test_predictions.json", str(tmp_path / "dl"))
    logged = json.loads(Path(local).read_text())
    assert [r[0] for r in logged["data"]] == test_ids and "finetuned_correct" in logged["columns"]


def test_the_clustered_mcnemar_is_logged_when_groups_repeat(tmp_path):
    from tests.test_report import classify_runs
    from vlmtune.report import compare_runs
    from vlmtune.track import result_scalars

    run = tmp_path / "run"
    run.mkdir()
    a, b = classify_runs(run, group_size=3)
    compare_runs(a, b, run)
    comparison = json.loads((run / "comparison.json").read_text())
    scalars = result_scalars(run)
    assert scalars["test/mcnemar_clustered/p_value"] == pytest.approx(comparison["mcnemar_clustered"]["p_value"])
    assert scalars["test/mcnemar/p_value"] == pytest.approx(comparison["mcnemar"]["p_value"])
