"""Memory levers that must not change the maths: chunked loss, activation policies, the layer planner."""

import pytest
import torch
import torch.nn.functional as F

from nextai.errors import NextaiError
from nextai.modules.loss import chunked_linear_cross_entropy
from nextai.modules.memory_plan import LayerCost, plan_layers

GiB = 2**30


def test_chunked_loss_equals_the_full_loss_and_gradient():
    torch.manual_seed(0)
    hidden = torch.randn(2, 700, 64, requires_grad=True)
    weight = torch.randn(500, 64) / 8
    labels = torch.randint(0, 500, (2, 700))
    labels[0, :50] = -100
    full = F.cross_entropy(F.linear(hidden, weight)[:, :-1].reshape(-1, 500).float(), labels[:, 1:].reshape(-1),
                           ignore_index=-100)
    (full_grad,) = torch.autograd.grad(full, hidden)
    chunked = chunked_linear_cross_entropy(hidden, weight, labels, chunk_tokens=256)
    (chunked_grad,) = torch.autograd.grad(chunked, hidden)
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(chunked_grad, full_grad)


def test_plan_keeps_all_layers_when_the_card_is_big():
    cost = LayerCost(keep_bytes=1 * GiB, input_bytes=64 << 20, recompute_peak_bytes=2 * GiB)
    plan = plan_layers(80, budget_bytes=130 * GiB, static_bytes=36 * GiB, cost=cost)
    assert plan.policies.count("keep") == 80 and plan.predicted_peak_bytes <= 130 * GiB


def test_plan_keeps_most_layers_then_recomputes_before_offloading():
    cost = LayerCost(keep_bytes=1 * GiB, input_bytes=64 << 20, recompute_peak_bytes=2 * GiB)
    plan = plan_layers(80, budget_bytes=60 * GiB, static_bytes=36 * GiB, cost=cost)
    keep, recompute, offload = (plan.policies.count(p) for p in ("keep", "recompute", "offload"))
    assert plan.predicted_peak_bytes <= 60 * GiB
    assert keep == 22  # 36 + 22 x 1 + 2 = 60 GiB: one more kept layer cannot fit even with every input offloaded
    assert plan.policies[-keep:] == ["keep"] * keep  # the last layers keep theirs
    # with 22 kept there is no room for more inputs on the GPU: the rest are offloaded, none needlessly
    assert recompute == 0 and offload == 58
    roomier = plan_layers(80, budget_bytes=int(62.5 * GiB), static_bytes=36 * GiB, cost=cost)
    # 24 kept (62 GiB), and the spare half GiB holds 8 inputs on the GPU: 8 recomputed, 48 offloaded
    assert [roomier.policies.count(p) for p in ("keep", "recompute", "offload")] == [24, 8, 48]


def test_plan_offloads_when_inputs_do_not_fit():
    cost = LayerCost(keep_bytes=1 * GiB, input_bytes=64 << 20, recompute_peak_bytes=1 * GiB)
    plan = plan_layers(80, budget_bytes=38 * GiB, static_bytes=34 * GiB, cost=cost)
    assert plan.policies.count("offload") > 0 and plan.predicted_peak_bytes <= 38 * GiB
    with pytest.raises(NextaiError, match="memory_budget 35.0 GiB is below the smallest possible step"):
        plan_layers(80, budget_bytes=35 * GiB, static_bytes=34.5 * GiB, cost=cost)
