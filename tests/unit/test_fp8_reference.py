"""The FP8 base GEMMs' reference rounding (`nextai.modules.fp8`, CPU): the values it produces, its error bounds, the
autograd plumbing through the lean 4-bit functions, the shared input, and the refusals off Hopper. The Triton kernels
are checked here through Triton's interpreter on exactly representable inputs when Triton is installed (the GPU
tests compare them bit for bit on any input: tests/e2e/test_fp8_gpu.py)."""

import importlib.util
import sys

import pytest
import torch

from nextai.errors import NextaiError
from nextai.modules import fp8
from nextai.modules.fp8 import (E4M3, Fp8Matmul, check_fp8_supported, nf4_absmax, nf4_to_fp8_reference,
                                nf4_weight_fp32, quantize_rows_reference, scaled_mm_reference, weight_scales)

HALF_ULP = 2.0**-4  # e4m3 keeps 3 mantissa bits: round to nearest is off by at most 2^-4 of the value
MIN_NORMAL = 2.0**-6


def nf4(shape, nested=True, seed=0, blocksize=64):
    import bitsandbytes.functional as F

    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
    weight[0, :3] = torch.tensor([0.0, 0.5, -0.5])  # a block with an outlier
    return F.quantize_4bit(weight, blocksize=blocksize, compress_statistics=nested, quant_type="nf4")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_rows_round_to_nearest_even_with_the_row_max_at_448():
    x = torch.tensor([[448.0, 21.0, 22.5, -0.0625, 0.0], [1.0, -0.5, 0.25, 3.0, 0.0], [0.0] * 5])
    q, scale = quantize_rows_reference(x.to(torch.bfloat16))
    # row 0: scale 1; 21 is a tie between 20 and 22 (step 2 in [16, 32)): to the even mantissa, 20
    assert q[0].float().tolist() == [448.0, 20.0, 22.0, -0.0625, 0.0]
    # row 1: amax 3 -> 448; 1 * 448 / 3 = 149.33 rounds to 144 (step 16 in [128, 256))
    assert q[1].float().tolist() == [144.0, -72.0, 36.0, 448.0, 0.0]
    assert scale[:2, 0].tolist() == [1.0, pytest.approx(3.0 / 448, rel=1e-7)]
    assert q[2].float().abs().sum() == 0 and scale[2, 0] == pytest.approx(1e-12 / 448)  # zeros stay zeros


def test_rows_error_is_at_most_half_an_e4m3_step():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1000, generator=generator)
    x[:, 7] *= 50  # outlier channels, as LLaMA activations have
    x = x.to(torch.bfloat16)
    q, scale = quantize_rows_reference(x)
    back, exact = q.float() * scale, x.float()
    assert q.dtype == E4M3 and scale.shape == (64, 1)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((64,), 448.0))
    normal = exact.abs() >= MIN_NORMAL * scale  # under e4m3's smallest normal the step is absolute
    error = (back - exact).abs()
    assert bool((error[normal] <= HALF_ULP * exact.abs()[normal] * (1 + 1e-6)).all())
    assert bool((error[~normal] <= 2.0**-10 * scale.expand_as(exact)[~normal]).all())  # half a subnormal step
    plain = torch.ones(1000, dtype=torch.bool)
    plain[7] = False
    assert 0.015 < relative(back[:, plain], exact[:, plain]) < 0.04  # measured 0.026 (the outliers land near 448)


@pytest.mark.parametrize("nested", [True, False])
def test_nf4_weight_is_bitsandbytes_fp32_dequantization_bit_for_bit(nested):
    import bitsandbytes.functional as F

    packed, state = nf4((96, 320), nested)
    absmax = (F.dequantize_blockwise(state.absmax, state.state2) + state.offset) if nested else state.absmax
    expected = torch.ops.bitsandbytes.dequantize_4bit.default(packed, absmax.float(), state.blocksize, "nf4",
                                                              state.shape, torch.float32)
    assert torch.equal(nf4_weight_fp32(packed, state), expected)


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_rounds_once_to_e4m3_within_half_a_step(transposed):
    packed, state = nf4((192, 640))
    weight = nf4_weight_fp32(packed, state)
    scales = weight_scales(nf4_absmax(state), state.shape, state.blocksize)
    w8 = nf4_to_fp8_reference(packed, state, scales, transposed)
    if transposed:
        assert w8.shape == (640, 192)
        back = (w8.float() * scales["col_scale"][:, None]).t()
    else:
        assert w8.shape == (192, 640)
        back = w8.float() * scales["row_scale"][:, None]
        # the NF4 table reaches +-1: every row's largest value lands on 448
        assert torch.equal(w8.float().abs().amax(dim=1), torch.full((192,), 448.0))
    assert float(w8.float().abs().max()) <= 448.0 and not w8.float().isnan().any()
    normal = weight.abs() >= 2.0**-6 * (back.abs().max() / 448)
    error = (back - weight).abs()
    assert bool((error[normal] <= HALF_ULP * weight.abs()[normal] * (1 + 1e-6)).all())
    assert 0.015 < relative(back, weight) < 0.035  # measured 0.025 (rows), 0.026 (columns)


def test_scaled_mm_reference_applies_row_and_column_scales():
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(8, 32, generator=generator), torch.randn(16, 32, generator=generator)
    qa, sa = quantize_rows_reference(a)
    qb, sb = quantize_rows_reference(b)
    got = scaled_mm_reference(qa, sa, qb, sb[:, 0], out_dtype=torch.float32)
    torch.testing.assert_close(got, (qa.float() * sa) @ (qb.float() * sb).t(), rtol=1e-5, atol=1e-6)


def lean_step(matmul, x, packed, state, lora_A, lora_B, grad):
    from nextai.modules.lean_lora import LoRANF4Function

    x = x.clone().requires_grad_(True)
    A, B = lora_A.clone().requires_grad_(True), lora_B.clone().requires_grad_(True)
    out = LoRANF4Function.apply(x, A, B, packed, state, matmul, 2.0, 0.0, 0)
    out.backward(grad)
    return out.float(), x.grad.float(), A.grad, B.grad


def test_lean_lora_layer_in_fp8_against_fp32_and_bf16():
    """One lean LoRA layer (a 4-bit o_proj-like weight, r 4) computed with the FP8 reference: output and input
    gradient within the measured FP8 error of an fp32 computation, LoRA's gradients close to the bf16 path's."""
    from nextai.modules.nf4_dequant import bitsandbytes_dequantize

    packed, state = nf4((256, 512), seed=3)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, 512, generator=generator).to(torch.bfloat16)
    grad = torch.randn(64, 256, generator=generator).to(torch.bfloat16)
    lora_A = torch.randn(4, 512, generator=generator) * 0.05
    lora_B = torch.randn(256, 4, generator=generator) * 0.05
    weight = nf4_weight_fp32(packed, state)
    exact_out = x.float() @ weight.t() + 2.0 * (x.float() @ lora_A.t()) @ lora_B.t()
    exact_grad_x = grad.float() @ weight + 2.0 * (grad.float() @ lora_B) @ lora_A
    out8, gx8, gA8, gB8 = lean_step(Fp8Matmul("reference"), x, packed, state, lora_A, lora_B, grad)
    out16, gx16, gA16, gB16 = lean_step(bitsandbytes_dequantize, x, packed, state, lora_A, lora_B, grad)
    assert relative(out16, exact_out) < 5e-3 and relative(gx16, exact_grad_x) < 5e-3
    assert 1e-2 < relative(out8, exact_out) < 6e-2  # two e4m3 operands: measured ~3.7e-2
    assert 1e-2 < relative(gx8, exact_grad_x) < 6e-2
    # LoRA's own matmuls stay bf16: its B gradient (x A^T from bf16 x) is the bf16 path's, A's sees FP8's output
    # gradient only through grad itself, which both paths share
    torch.testing.assert_close(gB8, gB16, rtol=0, atol=0)
    torch.testing.assert_close(gA8, gA16, rtol=0, atol=0)


def test_an_input_seen_again_is_quantized_once():
    packed, state = nf4((128, 256), seed=5)
    matmul = Fp8Matmul("reference", inference="fp8")
    x = torch.randn(1, 32, 256).to(torch.bfloat16)
    calls = []
    original = fp8.quantize_rows_reference

    def counted(t):
        calls.append(t.shape)
        return original(t)

    fp8.quantize_rows_reference = counted
    try:
        first = matmul.matmul(x.reshape(-1, 256), packed, state)  # q_proj, then k_proj and v_proj: three views
        again = matmul.matmul(x.reshape(-1, 256), packed, state)
        assert len(calls) == 1 and torch.equal(first, again)
        x.mul_(2)  # an in-place write bumps the version: quantized again
        doubled = matmul.matmul(x.reshape(-1, 256), packed, state)
        assert len(calls) == 2 and torch.allclose(doubled.float(), 2 * first.float(), rtol=1e-2, atol=1e-2)
        matmul.input_grad(torch.randn(32, 128).to(torch.bfloat16), packed, state)  # overwrites the buffer
        matmul.matmul(x.reshape(-1, 256), packed, state)
        assert len(calls) == 4
        with torch.inference_mode():  # no version counter: never shared
            y = torch.randn(32, 256).to(torch.bfloat16)
            matmul.matmul(y, packed, state)
            matmul.matmul(y, packed, state)
        assert len(calls) == 6
    finally:
        fp8.quantize_rows_reference = original


def test_inference_mode_takes_the_bf16_path_unless_asked_for_fp8():
    from nextai.modules.nf4_dequant import bitsandbytes_dequantize

    packed, state = nf4((128, 256), seed=9)
    x = torch.randn(16, 256).to(torch.bfloat16)
    bf16 = x @ bitsandbytes_dequantize(packed, state, torch.bfloat16).t()
    trained = Fp8Matmul("reference").matmul(x, packed, state)
    with torch.inference_mode():
        assert torch.equal(Fp8Matmul("reference").matmul(x, packed, state), bf16)
        assert torch.equal(Fp8Matmul("reference", inference="fp8").matmul(x, packed, state), trained)
    with torch.no_grad():  # reentrant checkpointing's first forward: still FP8, as its recomputation
        assert torch.equal(Fp8Matmul("reference").matmul(x, packed, state), trained)
    assert not torch.equal(trained, bf16)


def test_unsupported_weights_and_inputs_take_the_bf16_path():
    packed, state = nf4((96, 320), seed=6, blocksize=64)
    state_odd = nf4((100, 320), seed=6)[1]  # N = 100 is not a multiple of 16
    assert fp8.fp8_shape_ok(state) and not fp8.fp8_shape_ok(state_odd)
    matmul = Fp8Matmul("reference")
    x = torch.randn(8, 320)
    out = matmul.matmul(x, packed, state)  # fp32 input: the plain GEMM
    torch.testing.assert_close(out, x @ nf4_weight_fp32(packed, state).t(), rtol=1e-5, atol=1e-5)


def test_fp8_is_refused_off_hopper_in_one_line():
    with pytest.raises(NextaiError, match="needs an NVIDIA Hopper GPU") as err:
        check_fp8_supported("cpu")
    assert "\n" not in str(err.value)


def tiny_4bit_model():
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
            self.o_proj = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")

        def forward(self, x):
            return self.o_proj(self.q_proj(x))

    model = Tiny()
    model.is_loaded_in_4bit = True  # what peft reads to wrap bitsandbytes layers in its 4-bit LoRA class
    for layer in (model.q_proj, model.o_proj):  # quantized on assignment to a device
        layer.weight = bnb.nn.Params4bit(torch.randn(64, 64) * 0.02, requires_grad=False, quant_type="nf4").to("cpu")
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["o_proj"]))


def test_make_lean_refuses_fp8_without_hopper_lean_layers_or_a_known_value():
    from nextai.modules.lean_lora import make_lean

    with pytest.raises(NextaiError, match="model.base_matmul must be bf16 or fp8, got 'fp16'"):
        make_lean(tiny_4bit_model(), True, "triton", base_matmul="fp16")
    with pytest.raises(NextaiError, match="needs model.lean_lora true and model.dequant_kernel triton"):
        make_lean(tiny_4bit_model(), False, "triton", base_matmul="fp8")
    with pytest.raises(NextaiError, match="needs an NVIDIA Hopper GPU"):
        make_lean(tiny_4bit_model(), True, "triton", base_matmul="fp8")


def test_enable_swaps_every_4bit_layer_to_the_reference_fp8_gemms():
    from nextai.modules.lean_lora import DequantLinear4bit, LeanLoraLinear4bit, make_lean

    model = tiny_4bit_model()
    make_lean(model, True, "bitsandbytes")
    line = fp8.enable_fp8_base_matmuls(model, backend="reference")
    assert line.startswith("FP8 (e4m3) base GEMMs in 2 4-bit layers (torch reference")
    base = model.get_base_model()
    assert type(base.q_proj) is DequantLinear4bit and type(base.o_proj) is LeanLoraLinear4bit
    assert isinstance(base.q_proj.nextai_dequantize, Fp8Matmul)
    assert base.o_proj.nextai_dequantize is base.q_proj.nextai_dequantize
    x = torch.randn(2, 16, 64).to(torch.bfloat16).requires_grad_(True)
    model(x).float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_enable_refuses_peft_layers():
    with pytest.raises(NextaiError, match="needs model.lean_lora true"):
        fp8.enable_fp8_base_matmuls(tiny_4bit_model(), backend="reference")


# ---------------------------------------------------------------------- the Triton kernels, through the interpreter


def run_interpreted(check: str) -> None:
    """Run `check` (a function of this file) in a fresh Python with TRITON_INTERPRET=1: Triton reads it when it is
    first imported (its own library functions are jitted then), and transformers imports Triton early."""
    import os
    import subprocess

    if importlib.util.find_spec("triton") is None or torch.cuda.is_available():
        pytest.skip("needs Triton on a CPU machine (the GPU tests run the compiled kernels)")
    code = (f"import importlib.util; spec = importlib.util.spec_from_file_location('t', {__file__!r}); "
            f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.{check}")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TRITON_INTERPRET": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def e4m3_values(shape, generator):
    """Random values that e4m3 holds exactly (and so does bf16): the interpreter's own casts round ties away and
    drop the carry into the exponent (Triton 3.6), so exact inputs test the kernels' indexing and scaling alone."""
    bits = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    values = bits.view(E4M3).float()
    return torch.where(values.isnan(), torch.zeros_like(values), values)


def check_row_kernel() -> None:
    generator = torch.Generator().manual_seed(7)
    values = e4m3_values((9, 3000), generator)
    values[:, 5] = 448.0  # each row's amax is 448 * 2^-j: the inverse scale is a power of two
    values[4] = 0.0
    powers = 2.0 ** -torch.randint(0, 6, (9, 1), generator=generator).float()
    x = (values * powers).to(torch.bfloat16)
    q, scale = fp8.quantize_rows(x)
    q_ref, scale_ref = quantize_rows_reference(x)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8)) and torch.equal(scale, scale_ref)


def check_weight_kernel(transposed: bool) -> None:
    """A hand-made NF4 state whose table, block absmax and inverse scales are exact in e4m3 and powers of two, so
    W * inverse is exact: any wrong nibble, block, row or column shows."""
    packed, state = nf4((96, 320), nested=False, seed=8)
    generator = torch.Generator().manual_seed(9)
    # a table of e4m3 values (3 mantissa bits) and power-of-two scales: every product is a normal e4m3 value
    state.code = torch.tensor([-1, -0.875, -0.75, -0.625, -0.5, -0.375, -0.3125, 0, 0.25, 0.3125, 0.4375, 0.5,
                               0.625, 0.75, 0.875, 1.0])
    state.absmax = 2.0 ** torch.randint(0, 3, state.absmax.shape, generator=generator).float()
    n_rows, n_cols = state.shape
    scales = {"row_inverse": 2.0 ** torch.randint(0, 5, (n_rows,), generator=generator).float(),
              "col_inverse": 2.0 ** torch.randint(0, 5, (n_cols,), generator=generator).float()}
    got = fp8.nf4_to_fp8(packed, state, scales, transposed)
    expected = nf4_to_fp8_reference(packed, state, scales, transposed)
    assert got.shape == expected.shape and torch.equal(got.view(torch.uint8), expected.view(torch.uint8))


def test_interpreted_triton_kernels_match_the_reference():
    run_interpreted("check_row_kernel(); m.check_weight_kernel(False); m.check_weight_kernel(True)")
