"""Which examples go together in a micro batch, in which order: HF-style length grouping, resumable.

The order of an epoch is a pure function of (seed, epoch), so a run resumed mid-epoch can skip exactly the
micro batches it already trained on and see the rest in the same order.
"""

from abc import abstractmethod
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from nextai.errors import NextaiError


def epoch_order(lengths: Sequence[int], group_size: int, seed: int, epoch: int, group_by_length: bool) -> list[int]:
    """Example indices for one epoch.

    With `group_by_length`, transformers' `get_length_grouped_indices` (what HF's LengthGroupedSampler uses):
    a random permutation cut into mega-batches of 50 groups (fewer for small sets), each sorted longest first, with
    the overall longest example moved to the very front so an out-of-memory shows up at the first step.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    if not group_by_length:
        return torch.randperm(len(lengths), generator=generator).tolist()
    from transformers.trainer_pt_utils import get_length_grouped_indices

    return list(get_length_grouped_indices(list(lengths), group_size, generator=generator))


class _EpochSetter:
    """Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler`, not on the batch sampler itself: this is
    that `sampler`, and passes the epoch on."""

    def __init__(self, owner: "EpochBatchSampler") -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


class EpochBatchSampler(Sampler[list[int]]):
    """Yields the micro batches (lists of example indices) of `batches()` for the current epoch.

    `resume_at(epoch, batches_done)` skips the micro batches a resumed run already trained on, once, and only
    in that epoch. `rank`/`world_size` give each process every `world_size`-th micro batch.
    """

    def __init__(self, lengths: Sequence[int], seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.lengths = list(lengths)
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.sampler = _EpochSetter(self)  # where Lightning looks for set_epoch at every epoch start
        self._resume: tuple[int, int] | None = None
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done)

    @abstractmethod
    def plan(self) -> list[list[int]]:
        """All micro batches of the current epoch, for all ranks, in order."""

    def batches(self) -> list[list[int]]:
        """This rank's micro batches of the current epoch (equal counts on every rank)."""
        if self._cache is None or self._cache[0] != self.epoch:
            plan = self.plan()
            usable = len(plan) - len(plan) % self.world_size if self.world_size > 1 else len(plan)
            self._cache = (self.epoch, plan[self.rank:usable:self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        start = self._resume[1] if self._resume and self._resume[0] == self.epoch else 0
        self._resume = None
        yield from self.batches()[start:]

    def __len__(self) -> int:
        return len(self.batches())


class MicroBatchSampler(EpochBatchSampler):
    """`micro_batch_size` examples at a time, in `epoch_order` (evaluation: longest first, deterministic).

    `group_size` is the effective batch (micro batch x accumulation), as HF's Trainer groups by it.
    """

    def __init__(self, lengths: Sequence[int], micro_batch_size: int, group_size: int, seed: int,
                 group_by_length: bool = True, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(lengths, seed, shuffle, rank, world_size)
        self.micro_batch_size = micro_batch_size
        self.group_size = max(group_size, micro_batch_size)
        self.group_by_length = group_by_length

    def plan(self) -> list[list[int]]:
        if self.shuffle:
            order = epoch_order(self.lengths, self.group_size * self.world_size, self.seed, self.epoch,
                                self.group_by_length)
        else:
            order = sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i])
        size = self.micro_batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]


def position_for_processes(batches_done: int, saved_processes: int, processes: int) -> int:
    """Micro batches each of `processes` processes has done, given that each of `saved_processes` did
    `batches_done`. Every process count cuts an epoch into the same plan and the processes take turns along it, so
    what was trained is the plan's first `batches_done x saved_processes` micro batches, whoever trained them."""
    trained = batches_done * saved_processes
    if trained % processes:
        raise NextaiError(f"the checkpoint is {batches_done} micro batches into its epoch on each of "
                          f"{saved_processes} process(es), {trained} in all, which {processes} processes cannot "
                          f"share evenly: resume with {saved_processes} process(es), or from a checkpoint at an "
                          f"epoch boundary")
    return trained // processes
