"""`nextai bench` times the optimizer step on real gradients every time it repeats it (issue #22's ratios include
the optimizer step, as the peer's step times do)."""

import torch

from nextai.bench.child import optimizer_seconds


def test_every_timed_optimizer_step_updates_the_parameters():
    weight = torch.nn.Parameter(torch.zeros(4))
    untouched = torch.nn.Parameter(torch.zeros(2))  # no gradient: stays without one
    weight.grad = torch.ones(4)
    optimizer = torch.optim.SGD([weight, untouched], lr=0.5)
    seen = []

    def timer(step):
        before = weight.detach().clone()
        step()
        seen.append((before - weight.detach()).tolist())
        return float(len(seen))

    seconds = optimizer_seconds(optimizer, [weight, untouched], timer, repeats=3)
    assert seen == [[0.5] * 4] * 3  # each repetition stepped on the saved gradient
    assert seconds == 2.0  # the median of the three timings
    assert weight.grad is None and untouched.grad is None  # zero_grad(set_to_none=True) ran after each
