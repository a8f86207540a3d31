"""Length grouping (HF's mega-batch scheme) and the resumable epoch order."""

import random

import pytest

from nextai.data.packing import PackedBatchSampler
from nextai.data.sampler import MicroBatchSampler, epoch_order
from nextai.errors import NextaiError
from nextai.data.sampler import position_for_processes


def lengths(n=400, seed=0):
    rng = random.Random(seed)
    return [rng.randint(5, 1000) for _ in range(n)]


def test_order_is_a_permutation_and_deterministic():
    ls = lengths()
    order = epoch_order(ls, group_size=8, seed=3, epoch=0, group_by_length=True)
    assert sorted(order) == list(range(len(ls)))
    assert order == epoch_order(ls, group_size=8, seed=3, epoch=0, group_by_length=True)
    assert order != epoch_order(ls, group_size=8, seed=3, epoch=1, group_by_length=True)
    assert order != epoch_order(ls, group_size=8, seed=4, epoch=0, group_by_length=True)


def test_length_grouping_property():
    ls = lengths()
    group = 8
    order = epoch_order(ls, group_size=group, seed=1, epoch=0, group_by_length=True)
    # The longest example of the whole epoch comes first (an out-of-memory shows at step 1).
    assert ls[order[0]] == max(ls)
    # Mega-batches of min(n // (4 * group), 50) groups, each sorted longest first (apart from the swapped head).
    mega = min(len(ls) // (group * 4), 50) * group
    for start in range(0, len(order), mega):
        chunk = [ls[i] for i in order[start:start + mega]]
        assert chunk[1:] == sorted(chunk[1:], reverse=True)
    # Grouping packs similar lengths together: far less padding than a random order.
    def padding(o):
        return sum(max(ls[i] for i in o[k:k + group]) * len(o[k:k + group]) - sum(ls[i] for i in o[k:k + group])
                   for k in range(0, len(o), group))
    random_order = epoch_order(ls, group_size=group, seed=1, epoch=0, group_by_length=False)
    assert padding(order) < padding(random_order) / 3


def test_micro_batches_and_resume_skip_exactly_the_done_batches():
    ls = lengths(50)
    sampler = MicroBatchSampler(ls, micro_batch_size=4, group_size=8, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == len(sampler) == 13
    assert sorted(i for batch in full for i in batch) == list(range(50))
    sampler.resume_at(epoch=2, batches_done=5)
    assert list(sampler) == full[5:]
    assert list(sampler) == full  # the skip applies once
    sampler.resume_at(epoch=1, batches_done=5)  # a position of another epoch is not applied
    assert list(sampler) == full


def samplers(kind, ls, world_size):
    """One sampler per rank for an effective batch of 8 examples (micro batch 2), as the data module builds them."""
    if kind == "packed":
        return [PackedBatchSampler(ls, pack_length=2000, seed=0, rank=r, world_size=world_size)
                for r in range(world_size)]
    return [MicroBatchSampler(ls, micro_batch_size=2, group_size=8 // world_size, seed=0, rank=r,
                              world_size=world_size) for r in range(world_size)]


@pytest.mark.parametrize("kind", ["micro", "packed"])
@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (2, 4), (4, 2)])
def test_a_resume_onto_another_process_count_trains_the_rest_of_the_epoch_once(kind, before, after):
    ls = lengths(96)
    first = samplers(kind, ls, before)
    for sampler in first:
        sampler.set_epoch(3)
    done = 4  # micro batches each process trained: one optimizer step of 8 examples on 1, 2 or 4 processes
    trained = [i for sampler in first for batch in sampler.batches()[:done] for i in batch]
    resumed = samplers(kind, ls, after)
    for sampler in resumed:
        sampler.set_epoch(3)
        sampler.resume_at(epoch=3, batches_done=position_for_processes(done, before, after))
    rest = [i for sampler in resumed for batch in sampler for i in batch]
    # The epoch's plan (the same for every count) trained in order: no example twice, none left out, apart from
    # the tail the new count cannot share evenly (dropped, as in every epoch of that count).
    one = samplers(kind, ls, 1)[0]
    one.set_epoch(3)
    plan = one.plan()
    assert len(trained) == len(set(trained)) and not set(trained) & set(rest)
    assert sorted(trained + rest) == sorted(i for batch in plan[:len(resumed[0]) * after] for i in batch)


def test_a_position_that_processes_cannot_share_is_refused():
    assert position_for_processes(6, 2, 4) == 3 and position_for_processes(3, 4, 1) == 12
    with pytest.raises(NextaiError, match="3 micro batches into its epoch on each of 1 process.*2 processes"):
        position_for_processes(3, 1, 2)


def test_evaluation_order_is_longest_first():
    ls = [3, 9, 1, 7]
    sampler = MicroBatchSampler(ls, micro_batch_size=2, group_size=2, seed=0, shuffle=False)
    assert list(sampler) == [[1, 3], [0, 2]]


def test_lightning_sets_the_epoch_and_each_epoch_reshuffles():
    """Lightning calls set_epoch on `batch_sampler.sampler` at every epoch start; it must reach our sampler."""
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    lengths = [3 + (i * 7) % 50 for i in range(64)]
    sampler = MicroBatchSampler(lengths, micro_batch_size=4, group_size=8, seed=1)
    loader = DataLoader(list(range(64)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 0)
    first = list(sampler)
    _set_sampler_epoch(loader, 1)
    second = list(sampler)
    assert sampler.epoch == 1 and first != second
    assert sorted(i for batch in second for i in batch) == list(range(64))


def test_packed_epochs_have_the_same_length_and_a_new_order():
    from nextai.data.packing import PackedBatchSampler

    lengths = [5 + (i * 37) % 120 for i in range(500)]
    sampler = PackedBatchSampler(lengths, pack_length=256, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert len({len(e) for e in epochs}) == 1 and epochs[0] != epochs[1] != epochs[2]
    for packs in epochs:
        assert sorted(i for pack in packs for i in pack) == list(range(500))
        assert all(sum(lengths[i] for i in pack) <= 256 for pack in packs)
