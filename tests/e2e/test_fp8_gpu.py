"""FP8 base GEMMs (`nextai.modules.fp8`) on a Hopper GPU (run through `device`; skipped on CPU machines): the Triton
kernels bit for bit against the CPU reference rounding, the `torch._scaled_mm` GEMMs against the reference's fp32
sums, the shared input, and a training step of the tiny model through `make_lean(..., base_matmul="fp8")` against
the bf16 lean path."""

import copy

import pytest
import torch

from nextai.modules import fp8
from nextai.modules.fp8 import (Fp8Matmul, nf4_absmax, nf4_to_fp8, nf4_to_fp8_reference, nf4_weight_fp32,
                                quantize_rows, quantize_rows_reference, scaled_mm_reference, weight_scales)

from tiny_lora import build_tiny_lora

pytestmark = pytest.mark.gpu


def hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


needs_hopper = pytest.mark.skipif(not hopper(), reason="FP8 GEMMs with rowwise scales need compute capability 9.0")


def nf4_cuda(shape, nested=True, seed=0):
    import bitsandbytes.functional as F

    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(shape, generator=generator) * 0.02).to("cuda", torch.bfloat16)
    weight[0, :3] = torch.tensor([0.0, 0.5, -0.5])  # a zero and a block with an outlier
    return F.quantize_4bit(weight, blocksize=64, compress_statistics=nested, quant_type="nf4")


def on_cpu(packed, state):
    state = copy.deepcopy(state)
    state.to("cpu")
    return packed.cpu(), state


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many of the e4m3 values differ (bit patterns compared: -0 and +0 count as different)."""
    return int((a.cpu().view(torch.uint8) != b.cpu().view(torch.uint8)).sum())


@pytest.mark.parametrize("shape", [(1024, 8192), (8192, 1024), (96, 320), (28672, 512)])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("transposed", [False, True])
def test_nf4_to_fp8_kernel_equals_the_cpu_reference_bit_for_bit(shape, nested, transposed):
    packed, state = nf4_cuda(shape, nested)
    scales = weight_scales(nf4_absmax(state), state.shape, state.blocksize)
    got = nf4_to_fp8(packed, state, scales, transposed)
    cpu_packed, cpu_state = on_cpu(packed, state)
    cpu_scales = weight_scales(nf4_absmax(cpu_state), cpu_state.shape, cpu_state.blocksize)
    for key, value in scales.items():  # the scales themselves: computed on the GPU, as on the CPU
        assert torch.equal(value.cpu(), cpu_scales[key]), key
    expected = nf4_to_fp8_reference(cpu_packed, cpu_state, cpu_scales, transposed)
    assert got.shape == expected.shape
    assert same_bytes(got, expected) == 0


@pytest.mark.parametrize("shape", [(4096, 8192), (4093, 28672), (7, 1024), (33, 3000)])
def test_row_quantization_kernel_equals_the_cpu_reference_bit_for_bit(shape):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator)
    x[:, 3] *= 40  # an outlier channel
    x[min(5, shape[0] - 1)] = 0.0  # a row of zeros
    x = x.to("cuda", torch.bfloat16)
    q, scale = quantize_rows(x)
    q_ref, scale_ref = quantize_rows_reference(x.cpu())
    assert torch.equal(scale.cpu(), scale_ref)
    assert same_bytes(q, q_ref) == 0


@needs_hopper
@pytest.mark.parametrize("fast_accum", [False, True])
def test_scaled_mm_gemms_match_the_reference_sums(fast_accum):
    """The triton backend (kernels + torch._scaled_mm) against the reference backend (the same e4m3 operands, fp32
    sums in another order, rounded to bf16 once): within 2e-3, or 1e-2 with fast accumulation (which keeps fewer
    bits in its sums: measured ~3e-3 more error against fp64 at K = 8192 and 28,672)."""
    packed, state = nf4_cuda((1024, 8192), seed=2)
    x = torch.randn(4093, 8192, device="cuda").to(torch.bfloat16)
    grad = torch.randn(4093, 1024, device="cuda").to(torch.bfloat16)
    gpu, reference = Fp8Matmul("triton", fast_accum=fast_accum), Fp8Matmul("reference")
    for got, expected in [(gpu.matmul(x, packed, state), reference.matmul(x, packed, state)),
                          (gpu.input_grad(grad, packed, state), reference.input_grad(grad, packed, state))]:
        error = ((got.float() - expected.float()).norm() / expected.float().norm()).item()
        print(f"fast_accum={fast_accum}: relative difference {error:.2e}")
        assert error < (1e-2 if fast_accum else 2e-3)


@needs_hopper
def test_fp8_layer_error_against_fp32_is_the_measured_one():
    """One 70B-like projection (8192 -> 1024) at 4096 tokens: bf16 within 5e-3 of fp32, FP8 within 6e-2 (two e4m3
    operands; measured ~3.7e-2), for the output and the input gradient."""
    packed, state = nf4_cuda((1024, 8192), seed=3)
    weight = nf4_weight_fp32(packed, state)
    x = torch.randn(4096, 8192, device="cuda").to(torch.bfloat16)
    grad = torch.randn(4096, 1024, device="cuda").to(torch.bfloat16)
    exact_out, exact_grad = x.double() @ weight.double().t(), grad.double() @ weight.double()
    matmul = Fp8Matmul("triton")
    for got, exact in [(matmul.matmul(x, packed, state), exact_out), (matmul.input_grad(grad, packed, state),
                                                                      exact_grad)]:
        error = ((got.double() - exact).norm() / exact.norm()).item()
        assert 1e-2 < error < 6e-2, error
    bf16 = x @ weight.to(torch.bfloat16).t()
    assert ((bf16.double() - exact_out).norm() / exact_out.norm()).item() < 5e-3


@needs_hopper
def test_the_shared_input_is_quantized_once_per_attention_block_and_mlp(tiny_model_dir, monkeypatch):
    from nextai.modules.lean_lora import make_lean, undo_lean

    module = build_tiny_lora(tiny_model_dir, "cuda", lora_targets="attention_ffn_output", lora_dropout=0.0,
                             lean_lora=True, dequant_kernel="triton", kbit_preparation=False)
    undo_lean(module.model)
    make_lean(module.model, True, "triton", base_matmul="fp8")
    calls = []
    original = fp8.quantize_rows
    monkeypatch.setattr(fp8, "quantize_rows", lambda x, out=None: calls.append(x.shape) or original(x, out))
    ids = torch.randint(3, 1000, (1, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        module({"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)})
    layers = len(module.model.get_base_model().model.layers)
    assert len(calls) == 4 * layers  # q/k/v, o, gate/up, down


def step(module, batch):
    module.model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module(batch).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float().clone() for n, p in module.model.named_parameters()
                                   if p.requires_grad}


@needs_hopper
@pytest.mark.parametrize("checkpointing", [False, True])
def test_fp8_training_step_agrees_with_the_bf16_lean_path(tiny_model_dir, checkpointing):
    """The tiny model, LoRA on o_proj and down_proj: the loss within 2 % and every LoRA gradient within 25 % (norm)
    of the bf16 lean path's (measured: up to 10 % here, 13-19 % on four random 70B layers: e4m3's 3.7e-2 per GEMM,
    compounded through the layers; a wrong scale or layout gives 100 % and more), with and without activation
    checkpointing."""
    from nextai.modules.lean_lora import make_lean, undo_lean

    ids = torch.randint(3, 1000, (2, 512), generator=torch.Generator().manual_seed(1)).cuda()
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    module = build_tiny_lora(tiny_model_dir, "cuda", lora_targets="attention_ffn_output", lora_dropout=0.0,
                             lean_lora=True, dequant_kernel="triton", gradient_checkpointing=checkpointing)
    bf16_loss, bf16_grads = step(module, batch)
    undo_lean(module.model)
    line = make_lean(module.model, True, "triton", base_matmul="fp8")
    assert "FP8 (e4m3) base GEMMs in 14 4-bit layers" in line, line
    fp8_loss, fp8_grads = step(module, batch)
    again_loss, _ = step(module, batch)
    assert torch.equal(fp8_loss, again_loss)  # no state (the shared input, the buffers) leaks into the next step
    assert abs(fp8_loss - bf16_loss) / bf16_loss < 2e-2
    for name, grad in bf16_grads.items():
        error = ((fp8_grads[name] - grad).norm() / grad.norm()).item()
        assert error < 0.25, (name, error)
    print(f"loss bf16 {bf16_loss.item():.5f}, fp8 {fp8_loss.item():.5f}")


@needs_hopper
def test_check_passes_on_hopper_and_the_buffers_are_reserved(tiny_model_dir):
    from nextai.modules.lean_lora import make_lean, undo_lean

    fp8.check_fp8_supported("cuda")
    module = build_tiny_lora(tiny_model_dir, "cuda", lora_targets="attention_ffn_output", lean_lora=True,
                             dequant_kernel="triton")
    undo_lean(module.model)
    make_lean(module.model, True, "triton", base_matmul="fp8")
    matmul = module.model.get_base_model().model.layers[0].mlp.down_proj.nextai_dequantize
    assert isinstance(matmul, Fp8Matmul) and matmul.weights.nbytes() == 512 * 256  # the largest weight, 1 byte each


def test_scaled_mm_reference_is_what_scaled_mm_computes_on_exact_operands():
    """On operands whose products and sums are exact in fp32, torch._scaled_mm with rowwise scales equals the
    reference bit for bit: the scales multiply the sums, rows of A by scale_a, columns by scale_b."""
    if not hopper():
        pytest.skip("needs compute capability 9.0")
    generator = torch.Generator().manual_seed(4)
    a = torch.randint(-8, 9, (64, 128), generator=generator).float().to(fp8.E4M3)
    b = torch.randint(-8, 9, (32, 128), generator=generator).float().to(fp8.E4M3)
    scale_a = 2.0 ** torch.randint(-3, 3, (64, 1), generator=generator).float()
    scale_b = 2.0 ** torch.randint(-3, 3, (32,), generator=generator).float()
    got = torch._scaled_mm(a.cuda(), b.cuda().t(), scale_a=scale_a.cuda(), scale_b=scale_b.cuda()[None, :],
                           out_dtype=torch.bfloat16)
    assert torch.equal(got.cpu(), scaled_mm_reference(a, scale_a, b, scale_b))
