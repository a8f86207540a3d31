"""The fused Triton LoRA dropout kernels (`lora_dropout.TritonDropout`, taken with `model.dequant_kernel: triton`) on
CUDA (run through `device`; skipped on CPU machines): a Bernoulli(1 - p) mask fixed by its seed and drawn alike by
both kernels, each kernel equal to the torch expression with that mask, and the lean LoRA function through them
equal to the autograd reference."""

import bitsandbytes as bnb
import pytest
import torch

from nextai.modules.lean_lora import LoRANF4Function
from nextai.modules.lora_dropout import TorchDropout, TritonDropout
from nextai.modules.nf4_dequant import bitsandbytes_dequantize

pytestmark = pytest.mark.gpu


def triton_mask(shape, p, seed, dtype=torch.float32):
    """The mask the kernels draw, read back through the backward kernel: with x = 0, A = 1 (rank 1) and
    grad_xa = 1, grad_x += (grad_xa A) * m adds exactly m to a zero grad_x."""
    tokens, columns = shape
    mask = torch.zeros(shape, device="cuda", dtype=dtype)
    TritonDropout.backward_(torch.zeros_like(mask), torch.ones(1, columns, device="cuda", dtype=dtype),
                            torch.ones(tokens, 1, device="cuda", dtype=dtype), mask, p, seed)
    return mask


@pytest.mark.parametrize("shape", [(4096, 2048), (999, 777), (3, 5)])
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_the_mask_is_bernoulli_and_fixed_by_its_seed(shape, p):
    seed = 2**40 + 12345
    mask = triton_mask(shape, p, seed)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    n = mask.numel()
    if n > 10**6:  # within 5 standard deviations of 1 - p
        assert abs(mask.mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
        rows, cols = mask.mean(1), mask.mean(0)  # no row or column pattern
        assert rows.min() > 1 - p - 0.05 and cols.min() > 1 - p - 0.05
        bands = mask.view(-1, 16, shape[1]).mean((0, 2))  # nor one by row within a sub-tile
        assert (bands - (1 - p)).abs().max() < 0.01
    assert torch.equal(mask, triton_mask(shape, p, seed))
    assert not torch.equal(mask, triton_mask(shape, p, seed + 1)) or n < 20
    assert torch.equal(triton_mask(shape, 0.0, seed), torch.ones_like(mask))


def assert_close_to_scale(got, want, dtype):
    """Within a relative error of the largest value (long sums cancel, so small entries carry the sum's error):
    2e-6 in fp32 (summation order), 1e-2 in bf16 (one rounding of the result)."""
    tolerance = (2e-6 if dtype == torch.float32 else 1e-2) * want.abs().max().item()
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=tolerance)


@pytest.mark.parametrize("shape", [(4096, 8192), (999, 777), (200, 64)])
@pytest.mark.parametrize("rank", [1, 4, 24])
@pytest.mark.parametrize("p", [0.0, 0.05])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_both_kernels_equal_the_torch_expressions_with_that_mask(shape, rank, p, dtype):
    """project = (x * m) A^T; backward_ = grad_xa^T (x * m), and grad_x + (grad_xa A) * m: against fp32 torch on the
    same (rounded) operands. The fused kernels add in fp32 and round once; bf16 tolerances allow one rounding."""
    generator = torch.Generator(device="cuda").manual_seed(rank)
    tokens, columns = shape
    x = torch.randn(shape, device="cuda", generator=generator).to(dtype)
    lora_A = torch.randn(rank, columns, device="cuda", generator=generator).to(dtype)
    grad_xa = torch.randn(tokens, rank, device="cuda", generator=generator).to(dtype)
    grad_x = torch.randn(shape, device="cuda", generator=generator).to(dtype)
    mask = triton_mask(shape, p, 99, torch.float32)
    dropped = x.float() * mask

    xa = TritonDropout.project(x, lora_A, p, 99)
    updated = grad_x.clone()
    grad_A = TritonDropout.backward_(x, lora_A, grad_xa, updated, p, 99)
    grad_A_only = TritonDropout.backward_(x, lora_A, grad_xa, None, p, 99)

    assert xa.dtype == dtype and grad_A.dtype == torch.float32
    assert_close_to_scale(xa, dropped @ lora_A.float().t(), dtype)
    assert_close_to_scale(grad_A, grad_xa.float().t() @ dropped, torch.float32)
    assert torch.equal(grad_A, grad_A_only)
    assert_close_to_scale(updated, (grad_x.float() + (grad_xa.float() @ lora_A.float()) * mask).to(dtype), dtype)


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3])
def test_lora_function_with_triton_dropout_equals_the_autograd_reference(p):
    torch.manual_seed(0)
    linear = bnb.nn.Linear4bit(640, 480, bias=False, compute_dtype=torch.float32, compress_statistics=True,
                               quant_type="nf4").to("cuda")
    x = torch.randn(300, 640, device="cuda", requires_grad=True)
    lora_A = (torch.randn(4, 640, device="cuda") * 0.1).requires_grad_()
    lora_B = (torch.randn(480, 4, device="cuda") * 0.1).requires_grad_()
    grad_out = torch.randn(300, 480, device="cuda")
    packed, state = linear.weight, linear.weight.quant_state
    scaling, seed = 4.0, 987654321

    out = LoRANF4Function.apply(x, lora_A, lora_B, packed, state, bitsandbytes_dequantize, scaling, p, seed,
                                TritonDropout)
    out.backward(grad_out)
    ours = out.detach(), x.grad.clone(), lora_A.grad.clone(), lora_B.grad.clone()
    for t in (x, lora_A, lora_B):
        t.grad = None

    weight = bitsandbytes_dequantize(packed, state, torch.float32)
    mask = triton_mask(x.shape, p, seed)
    reference = x @ weight.t() + scaling * (x * mask / (1 - p)) @ lora_A.t() @ lora_B.t()
    reference.backward(grad_out)
    expected = reference.detach(), x.grad, lora_A.grad, lora_B.grad
    for got, want in zip(ours, expected):  # output, x grad, A grad, B grad (A's and B's sum 300 tokens)
        assert_close_to_scale(got, want, torch.float32)


def test_triton_and_torch_paths_agree_without_dropout():
    """With p = 0 there is no mask: both paths compute the same products (bf16, one rounding apart)."""
    generator = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(1000, 3000, device="cuda", generator=generator).bfloat16()
    lora_A = torch.randn(8, 3000, device="cuda", generator=generator).bfloat16()
    grad_xa = torch.randn(1000, 8, device="cuda", generator=generator).bfloat16()
    grad_x = torch.randn(1000, 3000, device="cuda", generator=generator).bfloat16()
    results = []
    for path in (TritonDropout, TorchDropout):
        updated = grad_x.clone()
        grad_A = path.backward_(x, lora_A, grad_xa, updated, 0.0, 0)
        results.append((path.project(x, lora_A, 0.0, 0).float(), grad_A.float(), updated.float()))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=0.5)
