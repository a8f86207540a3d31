"""Packing plans: every example exactly once, packs within pack_length, deterministic per (seed, epoch)."""

import random

import pytest

from nextai.data.packing import PackCollator, PackedBatchSampler, best_fit_decreasing
from nextai.errors import NextaiError


def lengths(n=3000, seed=0):
    rng = random.Random(seed)
    return [min(1024, max(16, int(rng.lognormvariate(5.7, 0.7)))) for _ in range(n)]


def test_best_fit_decreasing_fills_packs():
    ls = lengths()
    packs = best_fit_decreasing(range(len(ls)), ls, 4096)
    assert sorted(i for p in packs for i in p) == list(range(len(ls)))
    assert all(sum(ls[i] for i in p) <= 4096 for p in packs)
    assert sum(ls) / (len(packs) * 4096) > 0.97
    with pytest.raises(NextaiError, match="does not fit data.pack_length 100"):
        best_fit_decreasing([0], [101], 100)


def test_epoch_plans_are_deterministic_shuffled_and_resumable():
    ls = lengths(5000)
    sampler = PackedBatchSampler(ls, 4096, seed=7)
    first = sampler.plan()
    assert sorted(i for p in first for i in p) == list(range(len(ls)))
    assert sampler.plan() == first
    longest = max(ls)
    assert max(ls[i] for i in first[0]) == longest  # the pack with the longest example goes first
    sampler.set_epoch(1)
    assert sampler.plan() != first
    assert sampler.efficiency() > 0.95
    sampler.resume_at(1, 10)
    assert list(sampler) == sampler.batches()[10:]


def test_ranks_split_the_packs():
    ls = lengths(2000)
    ranks = [PackedBatchSampler(ls, 4096, seed=1, rank=r, world_size=2) for r in range(2)]
    plan = ranks[0].plan()
    a, b = ranks[0].batches(), ranks[1].batches()
    assert len(a) == len(b) == len(plan) // 2
    assert not {i for p in a for i in p} & {i for p in b for i in p}


def test_collator_restarts_positions_and_masks_boundaries():
    examples = [{"input_ids": [1, 5, 6, 7], "labels": [-100, -100, 6, 7]},
                {"input_ids": [1, 8, 9], "labels": [1, 8, 9]}]
    batch = PackCollator(pack_length=16)(examples)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 1, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 7, -100, 8, 9]]  # nothing predicts across the boundary
    assert batch["cu_seq_lens_q"].tolist() == [0, 4, 7] and batch["max_length_q"] == 4
    assert "attention_mask" not in batch
    assert batch["num_tokens"] == 7 and batch["num_slots"] == 16
