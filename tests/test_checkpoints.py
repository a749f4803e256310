"""What `--resume` continues from, without training: the newest complete checkpoint-N (numeric order, a
sentinel listing every file with its size), incomplete ones moved aside; and the length-grouped sampler's order
as a function of (seed, epoch) alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from vlmtune.train.checkpoints import SENTINEL, checkpoints, is_complete, last_complete_checkpoint, mark_complete
from vlmtune.train.trainer import EpochLengthSampler


def _checkpoint(folder: Path, step: int, *, complete: bool = True) -> Path:
    ckpt = folder / f"checkpoint-{step}"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"w" * (10 + step))
    (ckpt / "sub" / "rng.pth").write_bytes(b"r" * 3)
    if complete:
        mark_complete(ckpt)
    return ckpt


def test_the_sentinel_lists_every_file_with_its_size(tmp_path):
    ckpt = _checkpoint(tmp_path, 7)
    assert json.loads((ckpt / SENTINEL).read_text()) == {"files": {"model.safetensors": 17, "sub/rng.pth": 3}}
    assert is_complete(ckpt)


def test_a_missing_shorter_or_unlisted_sentinel_is_incomplete(tmp_path):
    assert not is_complete(_checkpoint(tmp_path, 1, complete=False))  # no sentinel
    ckpt = _checkpoint(tmp_path, 2)
    (ckpt / "sub" / "rng.pth").write_bytes(b"r")  # cut short
    assert not is_complete(ckpt)
    ckpt = _checkpoint(tmp_path, 3)
    (ckpt / "sub" / "rng.pth").unlink()  # missing
    assert not is_complete(ckpt)
    ckpt = _checkpoint(tmp_path, 4)
    for bad in ('{"files": {}}', "not json", "[]", '{"other": 1}'):  # empty, malformed
        (ckpt / SENTINEL).write_text(bad)
        assert not is_complete(ckpt), bad


def test_checkpoints_newest_first_in_numeric_order(tmp_path):
    assert checkpoints(tmp_path / "missing") == []
    for step in (9, 10, 2):
        _checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-11").write_text("a file, not a checkpoint")
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "checkpoint-12-old").mkdir()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-9", "checkpoint-2"]


def test_last_complete_checkpoint_skips_and_moves_aside_incomplete_ones(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    _checkpoint(tmp_path, 2, complete=False)
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6)
    _checkpoint(tmp_path, 8, complete=False)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-4"]
    aside = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "incomplete").iterdir())
    assert aside == ["checkpoint-2", "checkpoint-8"]
    assert (tmp_path / "incomplete").glob("checkpoint-8-*").__next__().joinpath("model.safetensors").is_file()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-6"  # nothing left to move


def test_only_incomplete_checkpoints_give_none_and_other_ranks_move_nothing(tmp_path, monkeypatch):
    _checkpoint(tmp_path, 3, complete=False)
    monkeypatch.setenv("RANK", "1")  # a DDP worker: the main process moves them
    assert last_complete_checkpoint(tmp_path) is None
    assert (tmp_path / "checkpoint-3").is_dir() and not (tmp_path / "incomplete").exists()
    monkeypatch.setenv("RANK", "0")
    assert last_complete_checkpoint(tmp_path) is None and not (tmp_path / "checkpoint-3").exists()


def test_epoch_length_sampler_is_a_function_of_seed_and_epoch():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12]
    s = EpochLengthSampler(4, lengths, seed=3)
    assert len(s) == 12 and s.epoch == 0
    first = list(s)
    assert sorted(first) == list(range(12)) and list(s) == first  # every index once, repeatable
    ref = get_length_grouped_indices(lengths, 4, generator=torch.Generator().manual_seed(3))
    assert first == list(ref)
    s.set_epoch(2)
    assert list(s) == list(get_length_grouped_indices(lengths, 4, generator=torch.Generator().manual_seed(5)))
    assert list(s) != first
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(EpochLengthSampler(4, lengths, seed=3)) == first


def test_the_trainer_groups_by_length_only_when_asked(micro_model_dir, count_data, tmp_path):
    """train.group_by_length picks the seeded EpochLengthSampler over the encoded lengths; off, transformers'
    own random sampler (a real VlmTrainer on the micro model)."""
    from transformers import TrainingArguments

    from vlmtune.config import ModelConfig
    from vlmtune.models.load import load_model
    from vlmtune.processing import tokenizer_of
    from vlmtune.train.collate import Collator, EncodedDataset, EncodeSettings
    from vlmtune.train.trainer import VlmTrainer

    model, proc = load_model(ModelConfig(name=str(micro_model_dir)))
    ds = EncodedDataset(proc, count_data[:6], EncodeSettings())
    for strategy, kind in (("group_by_length", EpochLengthSampler), ("random", torch.utils.data.RandomSampler)):
        args = TrainingArguments(
            output_dir=str(tmp_path / strategy),
            per_device_train_batch_size=2,
            seed=4,
            train_sampling_strategy=strategy,
            report_to=[],
            use_cpu=True,
        )
        trainer = VlmTrainer(
            model=model, args=args, train_dataset=ds, data_collator=Collator(tokenizer_of(proc).pad_token_id)
        )
        sampler = trainer._get_train_sampler()
        assert type(sampler) is kind, (strategy, sampler)
        if kind is EpochLengthSampler:
            assert sampler.lengths == ds.lengths and sampler.batch_size == 2 and sampler.seed == 4
