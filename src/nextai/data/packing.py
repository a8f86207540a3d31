"""Padding-free packing: several examples concatenated into one micro batch of at most `pack_length` tokens.

Positions restart at 0 for every example and the first label of every example is -100, so no token is trained to
predict across a boundary; attention is confined to each example by the model side (varlen kernels on CUDA,
transformers' position-ids path on the CPU). The collator is transformers' `DataCollatorWithFlattening`.
"""

import bisect
from collections.abc import Sequence

import torch

from nextai.data.sampler import EpochBatchSampler
from nextai.errors import NextaiError

PACK_WINDOW = 2048  # examples packed together: large enough to fill packs, small enough to keep epochs random


def best_fit_decreasing(indices: Sequence[int], lengths: Sequence[int], pack_length: int) -> list[list[int]]:
    """Packs of `indices` whose lengths sum to at most `pack_length`: each example, longest first, goes into the
    open pack it fills best (the one with the least room that still fits it)."""
    packs: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, pack number), sorted
    for index in sorted(indices, key=lambda i: -lengths[i]):
        length = lengths[index]
        if length > pack_length:
            raise NextaiError(f"an example of {length} tokens does not fit data.pack_length {pack_length}")
        at = bisect.bisect_left(room, (length, -1))
        if at < len(room):
            free, pack = room.pop(at)
            packs[pack].append(index)
            bisect.insort(room, (free - length, pack))
        else:
            packs.append([index])
            bisect.insort(room, (pack_length - length, len(packs) - 1))
    return packs


class PackedBatchSampler(EpochBatchSampler):
    """Micro batches that are packs. The packs are made once from the seed: a random order cut into windows of
    `PACK_WINDOW` examples, each packed by best-fit decreasing. Each epoch shuffles the packs (seed + epoch), so
    every epoch has the same number of micro batches (Lightning sizes the epoch once). With `group_by_length` the
    pack holding the longest example goes first (an out-of-memory shows at step 1)."""

    def __init__(self, lengths: Sequence[int], pack_length: int, seed: int, group_by_length: bool = True,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(lengths, seed, shuffle, rank, world_size)
        self.pack_length = pack_length
        self.group_by_length = group_by_length
        self._packs: list[list[int]] | None = None

    def packs(self) -> list[list[int]]:
        """Every pack, in the order they were made (the same in every epoch)."""
        if self._packs is None:
            order = (torch.randperm(len(self.lengths), generator=torch.Generator().manual_seed(self.seed)).tolist()
                     if self.shuffle else list(range(len(self.lengths))))
            self._packs = []
            for start in range(0, len(order), PACK_WINDOW):
                self._packs += best_fit_decreasing(order[start:start + PACK_WINDOW], self.lengths, self.pack_length)
        return self._packs

    def plan(self) -> list[list[int]]:
        packs = self.packs()
        if not self.shuffle:
            return list(packs)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        packs = [packs[i] for i in torch.randperm(len(packs), generator=generator).tolist()]
        if self.group_by_length and packs:
            longest = max(range(len(packs)), key=lambda p: max(self.lengths[i] for i in packs[p]))
            packs.insert(0, packs.pop(longest))
        return packs

    def efficiency(self) -> float:
        """Real tokens over pack slots."""
        packs = self.packs()
        return sum(self.lengths[i] for pack in packs for i in pack) / max(len(packs) * self.pack_length, 1)


class PackCollator:
    """One pack per micro batch: `DataCollatorWithFlattening` (input_ids, labels with -100 at every boundary,
    position_ids restarting per example, cu_seq_lens_q/k and max_length_q/k for varlen kernels), plus
    `num_tokens` and `num_slots` (= pack_length) for the packing efficiency."""

    def __init__(self, pack_length: int) -> None:
        from transformers import DataCollatorWithFlattening  # here: `nextai plan` cuts packs without transformers

        self.pack_length = pack_length
        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100,
                                                  return_flash_attn_kwargs=True)

    def __call__(self, examples: list[dict]) -> dict:
        batch = dict(self.flatten([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]))
        batch["num_tokens"] = int(batch["input_ids"].numel())
        batch["num_slots"] = self.pack_length
        return batch
