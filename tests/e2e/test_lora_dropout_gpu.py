"""The Triton LoRA dropout (`lora_dropout.TritonDropout`, taken with `model.dequant_kernel: triton`) on CUDA (run
through `device`; skipped on CPU machines): a Bernoulli(1 - p) mask fixed by its seed, the same in both kernels, and
the lean LoRA function through it equal to the autograd reference with that mask."""

import bitsandbytes as bnb
import pytest
import torch

from nextai.modules.lean_lora import LoRANF4Function
from nextai.modules.lora_dropout import TritonDropout
from nextai.modules.nf4_dequant import DequantWorkspace, bitsandbytes_dequantize

pytestmark = pytest.mark.gpu


def triton_mask(shape, p, seed, dtype=torch.float32):
    return TritonDropout().dropped(torch.ones(shape, device="cuda", dtype=dtype), p, seed)


@pytest.mark.parametrize("shape", [(4096, 2048), (999, 777), (3, 5)])
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_the_mask_is_bernoulli_fixed_by_its_seed_and_shared_by_both_kernels(shape, p):
    seed = 2**40 + 12345
    mask = triton_mask(shape, p, seed)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    n = mask.numel()
    if n > 10**6:  # within 5 standard deviations of 1 - p
        assert abs(mask.mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
        rows, cols = mask.mean(1), mask.mean(0)  # no row or column pattern
        assert rows.min() > 1 - p - 0.05 and cols.min() > 1 - p - 0.05
    assert torch.equal(mask, triton_mask(shape, p, seed))
    assert not torch.equal(mask, triton_mask(shape, p, seed + 1)) or n < 20
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(TritonDropout().dropped(x, p, seed), x * mask.to(x.dtype))
    grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    t = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    expected = (grad.float() + t.float() * mask).to(torch.bfloat16)
    TritonDropout().add_masked_(grad, t, p, seed)
    assert torch.equal(grad, expected)


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("scratch", [False, True])
def test_lora_function_with_triton_dropout_equals_the_autograd_reference(p, scratch):
    """With `scratch`, the masked input and the LoRA input gradient are written into the dequantization workspace
    (what `make_lean` sets up); the results must not change."""
    torch.manual_seed(0)
    linear = bnb.nn.Linear4bit(640, 480, bias=False, compute_dtype=torch.float32, compress_statistics=True,
                               quant_type="nf4").to("cuda")
    x = torch.randn(300, 640, device="cuda", requires_grad=True)
    lora_A = (torch.randn(4, 640, device="cuda") * 0.1).requires_grad_()
    lora_B = (torch.randn(480, 4, device="cuda") * 0.1).requires_grad_()
    grad_out = torch.randn(300, 480, device="cuda")
    packed, state = linear.weight, linear.weight.quant_state
    scaling, seed = 4.0, 987654321

    workspace = None
    if scratch:
        workspace = DequantWorkspace()
        workspace.reserve(640 * 480, torch.float32, x.device)
    dropout = TritonDropout(workspace)
    out = LoRANF4Function.apply(x, lora_A, lora_B, packed, state, bitsandbytes_dequantize, scaling, p, seed, dropout)
    out.backward(grad_out)
    ours = out.detach(), x.grad.clone(), lora_A.grad.clone(), lora_B.grad.clone()
    for t in (x, lora_A, lora_B):
        t.grad = None

    weight = bitsandbytes_dequantize(packed, state, torch.float32)
    mask = triton_mask(x.shape, p, seed) if p else torch.ones_like(x)
    reference = x @ weight.t() + scaling * (x * mask / (1 - p)) @ lora_A.t() @ lora_B.t()
    reference.backward(grad_out)
    expected = reference.detach(), x.grad, lora_A.grad, lora_B.grad
    for name, got, want in zip(("output", "x grad", "A grad", "B grad"), ours, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
    if scratch and p:  # the masked input went into the workspace, not the allocator
        assert dropout._out(x).data_ptr() == workspace.borrow(x.shape, x.dtype, x.device).data_ptr()
