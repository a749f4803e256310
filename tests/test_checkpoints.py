"""What `--resume` continues from, without training: the newest complete checkpoint-N (numeric order, a
sentinel listing every file with its size), incomplete ones moved aside; and the length-grouped sampler's order
as a function of (seed, epoch) alone."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from vlmtune.train.checkpoints import SENTINEL, checkpoints, is_complete, last_complete_checkpoint, mark_complete
from vlmtune.train.sampling import EpochLengthSampler, length_grouped_indices


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
    assert first == length_grouped_indices(lengths, 4, torch.Generator().manual_seed(3))
    s.set_epoch(2)
    assert list(s) == length_grouped_indices(lengths, 4, torch.Generator().manual_seed(5))
    assert list(s) != first
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(EpochLengthSampler(4, lengths, seed=3)) == first


def _majority_share(order: list[int], labels: list[int], batch: int) -> float:
    shares = []
    for i in range(0, len(order), batch):
        counts = collections.Counter(labels[j] for j in order[i : i + batch])
        shares.append(max(counts.values()) / sum(counts.values()))
    return sum(shares) / len(shares)


def test_length_grouping_never_sorts_batches_by_label_yet_saves_padding():
    """Answers whose length follows the label (classify: 1-3 tokens apart, prompts alike) stay as mixed as in a
    random order, where transformers' exact sort gives single-label batches; lengths far apart are still grouped."""
    from vlmtune.train.collate import padding_fraction

    rng = random.Random(0)
    labels = [rng.randrange(4) for _ in range(1200)]
    lengths = [{0: 33, 1: 34, 2: 36, 3: 35}[y] for y in labels]
    exact = list(get_length_grouped_indices(lengths, 16, generator=torch.Generator().manual_seed(0)))
    ours = length_grouped_indices(lengths, 16, torch.Generator().manual_seed(0))
    shuffled = torch.randperm(1200, generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(ours) == list(range(1200))
    assert _majority_share(exact, labels, 16) > 0.7  # the failure this sampler avoids
    assert _majority_share(ours, labels, 16) < _majority_share(shuffled, labels, 16) + 0.05
    # Very different lengths (short questions beside long dialogues) are kept apart: far less padding.
    varied = [rng.choice((40, 60, 400, 900)) + rng.randrange(20) for _ in range(1200)]
    grouped = length_grouped_indices(varied, 16, torch.Generator().manual_seed(0))
    assert padding_fraction(varied, grouped, 16) < 0.5 * padding_fraction(varied, shuffled, 16)
    first = grouped[:16]  # the longest batch comes first, so an out-of-memory error shows at the first step
    assert max(varied[i] for i in first) == max(varied)
    # train.length_tolerance=0 is transformers' exact sort, unchanged (the order earlier versions trained in).
    assert length_grouped_indices(lengths, 16, torch.Generator().manual_seed(0), 0) == exact


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
            assert sampler.tolerance == -1  # train.length_tolerance's default reaches the sampler
            exact = VlmTrainer(
                model=model,
                args=args,
                train_dataset=ds,
                data_collator=Collator(tokenizer_of(proc).pad_token_id),
                length_tolerance=0,
            )._get_train_sampler()
            assert exact.tolerance == 0
