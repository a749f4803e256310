"""The training order when `train.group_by_length` is on: batches of similar length, and never of one label.

transformers' `get_length_grouped_indices` sorts each mega-batch (50 batches of a random permutation) by exact
length. Where a task's answers differ in length by label (classify: "mixed" and "triangles" are not the same
number of tokens; the prompts are all alike), sorting by exact length puts one label in each batch, and the
model swings to the label of the batch it last saw: on the shapes world's classify task at 1,600 examples, 0.24
accuracy with it against 0.80 with shuffled batches (the README's Training section has the command).

So lengths are sorted with a random jitter of up to `tolerance(lengths)` tokens (`train.length_tolerance`; by
default a quarter of the median length, at least 32): examples whose lengths differ by less than that land in
random order, which mixes labels, while examples of very different length (a 40-token question beside a
900-token dialogue) are still kept apart, which is where the padding is. The batches of a mega-batch are then
shuffled, and the longest batch goes first, as transformers does, so an out-of-memory error shows at the first
step. `train.length_tolerance=0` is transformers' exact sort, unchanged (the order earlier versions trained in).
"""

from __future__ import annotations

import statistics

import torch

MEGA = 50  # batches per mega-batch, as transformers
MIN_TOLERANCE = 32
AUTO = -1


def tolerance(lengths: list[int], setting: int = AUTO) -> int:
    """The jitter, in tokens: lengths closer than this are not told apart. setting: `train.length_tolerance`."""
    if setting != AUTO:
        return setting
    return max(MIN_TOLERANCE, int(statistics.median(lengths) // 4)) if lengths else MIN_TOLERANCE


def length_grouped_indices(
    lengths: list[int], batch_size: int, generator: torch.Generator, setting: int = AUTO
) -> list[int]:
    """Every index once, in batches of similar length (see the module's docstring); a function of the generator.
    setting: `train.length_tolerance` (-1: automatic; 0: transformers' exact sort)."""
    n = len(lengths)
    if n == 0:
        return []
    width = tolerance(lengths, setting)
    if width == 0:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return list(get_length_grouped_indices(lengths, batch_size, generator=generator))
    perm = torch.randperm(n, generator=generator).tolist()
    jitter = (torch.rand(n, generator=generator) * width).tolist()
    size = MEGA * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, size):
        mega = sorted(perm[start : start + size], key=lambda i: lengths[i] + jitter[i], reverse=True)
        group = [mega[j : j + batch_size] for j in range(0, len(mega), batch_size)]
        order = torch.randperm(len(group), generator=generator).tolist()
        batches += [group[k] for k in order]
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return [i for b in batches for i in b]


class EpochLengthSampler(torch.utils.data.Sampler):
    """The length-grouped order, drawn from (seed, epoch) alone. transformers' LengthGroupedSampler draws from the
    global RNG, which a resumed run restores at the checkpoint's step, not at its epoch's start, so a run resumed
    inside epoch 2 or later would take other batches than the run it continues. The Trainer calls `set_epoch`
    before each epoch (resumed ones too), so the order is a function of the epoch only."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int, tolerance: int = AUTO):
        self.batch_size, self.lengths, self.seed, self.epoch = batch_size, lengths, seed, 0
        self.tolerance = tolerance

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(length_grouped_indices(self.lengths, self.batch_size, generator, self.tolerance))
