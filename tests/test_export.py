"""`vlmtune export`: a run's adapter, or the merged model, written whole with a model card and export.json;
push to the hub through huggingface_hub's HfApi (a recording stand-in here: the hub is unreachable offline)."""

from __future__ import annotations

import json

import pytest
import torch

from vlmtune.cli import main
from vlmtune.config import ModelConfig, TrainConfig, dump_yaml, load_config
from vlmtune.models.load import dir_hash, load_model


@pytest.fixture(scope="module")
def run_dir(micro_model_dir, tmp_path_factory):
    """What `vlmtune run` leaves: config.yaml naming the base, adapter/ with a non-zero LoRA delta."""
    from vlmtune.train.trainer import attach_lora

    run = tmp_path_factory.mktemp("export") / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(load_config(None, [f"model.name={micro_model_dir}", "name=r"])))
    model, proc = load_model(ModelConfig(name=str(micro_model_dir)))
    torch.manual_seed(0)
    model = attach_lora(model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    model.save_pretrained(run / "adapter")
    proc.save_pretrained(run / "adapter")
    return run


def logits(model, proc):
    ids = proc.tokenizer("how many red shapes are there", return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**ids).logits


def test_export_adapter_then_merged_model_give_the_runs_outputs(run_dir, micro_model_dir, tmp_path, capsys):
    ref_model, proc = load_model(ModelConfig(name=str(micro_model_dir)), adapter=str(run_dir / "adapter"))
    ref = logits(ref_model, proc)
    base_only = logits(load_model(ModelConfig(name=str(micro_model_dir)))[0], proc)
    assert not torch.allclose(ref, base_only, atol=1e-3)  # the adapter matters, so equality below means something

    assert main(["export", str(run_dir), "--out", str(tmp_path / "ad")]) == 0
    ad = tmp_path / "ad"
    meta = json.loads((ad / "export.json").read_text())
    assert meta["kind"] == "adapter" and meta["base"] == str(micro_model_dir)
    assert meta["weights_hash"] == dir_hash(run_dir / "adapter") and meta["base_hash"] == dir_hash(micro_model_dir)
    card = (ad / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft") and "r=4, alpha=8" in card
    got, _ = load_model(ModelConfig(name=str(micro_model_dir)), adapter=str(ad))
    assert torch.allclose(logits(got, proc), ref, atol=1e-5)

    assert main(["export", str(run_dir), "--merge", "--out", str(tmp_path / "merged")]) == 0
    merged_dir = tmp_path / "merged"
    assert not (merged_dir / "adapter_config.json").exists()  # a standalone model: no PEFT needed to load it
    assert json.loads((merged_dir / "export.json").read_text())["kind"] == "merged"
    assert "library_name: transformers" in (merged_dir / "README.md").read_text()
    merged, mproc = load_model(ModelConfig(name=str(merged_dir)))
    assert torch.allclose(logits(merged, mproc), ref, atol=1e-4)
    assert not list(tmp_path.glob(".*export-*"))  # no half-built directory left behind


def test_export_refuses_to_overwrite_unless_asked(run_dir, tmp_path, capsys):
    out = tmp_path / "ad"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert (
        main(["export", str(run_dir / "adapter"), "--out", str(out), "--overwrite"]) == 0
    )  # the adapter dir works too
    assert not (out / "keep.txt").exists() and (out / "adapter_config.json").exists()


def test_export_errors_name_the_fix(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    cfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (bare / "adapter_config.json").write_text(json.dumps(cfg))
    assert main(["export", str(bare), "--out", str(tmp_path / "o1")]) == 2
    assert "pass --base MODEL" in capsys.readouterr().err
    empty_run = tmp_path / "runs" / "untrained"
    empty_run.mkdir(parents=True)
    (empty_run / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["export", str(empty_run), "--out", str(tmp_path / "o2")]) == 2
    assert "has no trained weights yet" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))


class RecordingHfApi:
    """huggingface_hub.HfApi's two calls that push_to_hub makes, recorded (or failing like an offline machine)."""

    calls: list = []
    fail = False

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private, repo_type, exist_ok):
        if self.fail:
            raise ConnectionError("no route to host")
        self.calls.append(("create_repo", repo_id, private, repo_type, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
        self.calls.append(
            (
                "upload_folder",
                folder_path,
                repo_id,
                repo_type,
                sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir()),
            )
        )


def test_push_to_hub_uploads_the_export_private_by_default(run_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    RecordingHfApi.calls = []
    assert main(["export", str(run_dir), "--out", str(tmp_path / "ad"), "--push-to-hub", "me/count-adapter"]) == 0
    create, upload = RecordingHfApi.calls
    assert create == ("create_repo", "me/count-adapter", True, "model", True)
    assert upload[1] == str(tmp_path / "ad") and upload[2] == "me/count-adapter"
    assert {"adapter_config.json", "README.md", "export.json"} <= set(upload[4])
    assert "pushed" in capsys.readouterr().out
    RecordingHfApi.calls = []
    assert main(["export", str(run_dir), "--out", str(tmp_path / "ad2"), "--push-to-hub", "me/x", "--public"]) == 0
    assert RecordingHfApi.calls[0][2] is False

    assert main(["export", str(run_dir), "--out", str(tmp_path / "ad3"), "--push-to-hub", "no-owner"]) == 2
    assert "OWNER/NAME" in capsys.readouterr().err and not (tmp_path / "ad3").exists()
    monkeypatch.setattr(RecordingHfApi, "fail", True)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "ad4"), "--push-to-hub", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "failed (ConnectionError" in err and "hf auth login" in err
    assert (tmp_path / "ad4" / "adapter_config.json").exists()  # the local export is kept
