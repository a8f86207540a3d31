"""FP8 (e4m3) GEMMs for the frozen NF4 base on Hopper (`model.base_matmul: fp8`, issue #22), and the CPU reference
of their rounding.

API
- `check_fp8_supported(device)`: raises `NextaiError` (one line) unless `device` is a CUDA GPU of compute
  capability 9.0 or newer (Hopper: `torch._scaled_mm` with rowwise scales).
- `lean_lora.make_lean(model, lean_lora=True, kernel="triton", base_matmul="fp8")`: the switch. It makes the lean
  layers as for bf16, checks the device, then calls `enable_fp8_base_matmuls`; its line for the log says so.
- `enable_fp8_base_matmuls(model, backend="triton") -> str`: give every lean 4-bit layer FP8 base GEMMs (plain
  bitsandbytes 4-bit linears become `lean_lora.DequantLinear4bit` first); one line for the log. `backend="reference"`
  runs the same rounding with torch ops on any device (tests; far slower).
- `Fp8Matmul`: what those layers then hold as their dequantizer: `matmul(x, packed, quant_state)` = x W^T and
  `input_grad(grad, packed, quant_state)` = grad W, in FP8; called like a dequantizer it returns W in bf16. Under
  `torch.inference_mode` (validation, generation) it takes the bf16 path unless built with `inference="fp8"`.
- The reference rounding (torch ops, any device): `quantize_rows_reference`, `nf4_absmax`, `nf4_weight_fp32`,
  `weight_scales`, `nf4_to_fp8_reference`, `scaled_mm_reference`.

What is FP8 and what stays bf16: only the three GEMMs with the frozen weight W (N x K) are FP8: the forward x W^T,
its recomputation, and the input gradient grad W. LoRA's matmuls, norms, attention and the loss stay bf16; there is
no weight gradient (W is frozen).

The rounding (measured errors: docs/fp8.md):
- Activations x (M x K) and output gradients grad (M x N): one scale per row (token), s = amax / 448;
  q = e4m3(v * (448 / amax)), rounded to nearest even in fp32. A row of zeros gets amax = 1e-12.
- W: NF4 is dequantized in fp32 exactly as the bf16 kernel does (w = table[nibble] * absmax of the 64-block), then
  rounded straight to e4m3 (one rounding, never through bf16) with scales the NF4 absmax gives without a pass over
  W: the forward's per output row (max of the row's block absmax: the NF4 table reaches +-1, so that is the row's
  amax), the input gradient's per input column (max over rows of the absmax of the column's block). e4m3 keeps 3
  mantissa bits whatever the scale: each value is off by at most 2^-4 of itself, as long as it stays above e4m3's
  smallest normal (2^-6 of the scale's 448), i.e. within 1 : 28,672 of its row's (column's) largest value; the
  scales only avoid overflow and that underflow.
- The GEMMs: `torch._scaled_mm` (cuBLASLt on Hopper), fp32 accumulation, the two scales applied to the fp32 sums,
  bf16 out. It wants A row-major and B column-major: the forward takes A = q(x) and B = W8^T, a view of W8 stored
  N x K; the input gradient takes A = q(grad) and B = W8, so the weight is dequantized transposed (stored K x N,
  with the per-column scales), by the same kernel with a transposed store.

Sharing: q/k/v and gate/up read the same input. `Fp8Matmul` keeps the last input it quantized for a forward GEMM
(its identity: the root tensor, offset, shape, strides and version) and reuses it while the same tensor comes
again, so x is quantized once per attention block and once per MLP.

Memory: W8 (1 byte a value) is written into one reused buffer, as the bf16 dequantization is (half its size), and
the quantized activations or gradients into a second one (M x the widest input: 117 MiB at 4096 tokens and 70B's
28,672); nothing more is kept for the backward pass than in bf16.
"""

import weakref
from typing import Literal

import torch

from nextai.errors import NextaiError
from nextai.modules.nf4_dequant import DequantWorkspace, bitsandbytes_dequantize, dequantizer, triton_supported

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
AMAX_FLOOR = 1e-12
FP8Backend = Literal["triton", "reference"]
InferenceMatmul = Literal["bf16", "fp8"]
# `torch._scaled_mm(use_fast_accum=True)`: Hopper's FP8 tensor cores keep fewer bits in their sums unless the kernel
# promotes them to fp32 now and then. Measured on an H100 at 4096 tokens (docs/fp8.md): the 28,672 x 8,192 GEMM
# 1.45 instead of 1.87 ms, its error against fp64 3.65e-2 instead of 3.64e-2 (the operands' e4m3 rounding is
# nearly all of it).
FAST_ACCUM = True


def check_fp8_supported(device: torch.device | str) -> None:
    """One line (NextaiError) unless `device` is a CUDA GPU that runs FP8 GEMMs with rowwise scales (Hopper: compute
    capability 9.0 or newer)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise NextaiError(f"model.base_matmul fp8 needs an NVIDIA Hopper GPU (compute capability 9.0 or newer); "
                          f"the model is on '{device}'")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        raise NextaiError(f"model.base_matmul fp8 needs an NVIDIA Hopper GPU (compute capability 9.0 or newer); "
                          f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use model.base_matmul bf16")
    if not hasattr(torch, "_scaled_mm"):
        raise NextaiError(f"model.base_matmul fp8 needs torch._scaled_mm, which torch {torch.__version__} lacks")


# ------------------------------------------------------------------------------------ the reference rounding


def _divide(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """a / b rounded once (IEEE), as the kernels' `div_rn`: torch computes `scalar / tensor` as a reciprocal times
    the scalar, and on CUDA `tensor / scalar` as a product with the scalar's reciprocal (two roundings each)."""
    like = a if torch.is_tensor(a) else b
    a = a if torch.is_tensor(a) else torch.full_like(like, a)
    b = b if torch.is_tensor(b) else torch.full_like(like, b)
    return torch.div(a, b)


def quantize_rows_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): q = e4m3(x * (448 / amax)) per row, scale = amax / 448 (M x 1, fp32); q * scale ~ x."""
    values = x.float()
    amax = values.abs().amax(dim=1).clamp_min(AMAX_FLOOR)
    q = (values * _divide(E4M3_MAX, amax)[:, None]).to(E4M3)
    return q, _divide(amax, E4M3_MAX)[:, None]


def nf4_absmax(quant_state) -> torch.Tensor:
    """The fp32 absmax of every NF4 block, the doubly quantized ones decoded as the Triton kernels decode them
    (code2[q] * absmax2[group], then + offset: two roundings, no FMA)."""
    if not quant_state.nested:
        return quant_state.absmax.float()
    state2 = quant_state.state2
    index = torch.arange(quant_state.absmax.numel(), device=quant_state.absmax.device) // state2.blocksize
    return state2.code[quant_state.absmax.long()] * state2.absmax[index] + quant_state.offset


def nf4_weight_fp32(packed: torch.Tensor, quant_state) -> torch.Tensor:
    """W (N x K) in fp32: table[nibble] * absmax, one rounding (the even element is the high nibble)."""
    numel = quant_state.shape.numel()
    byte = packed.reshape(-1).view(torch.uint8).long()
    nibbles = torch.stack((byte >> 4, byte & 15), dim=-1).reshape(-1)[:numel]
    absmax = nf4_absmax(quant_state).repeat_interleave(quant_state.blocksize)[:numel]
    return (quant_state.code.float().to(packed.device)[nibbles] * absmax).reshape(quant_state.shape)


def weight_scales(absmax: torch.Tensor, shape: torch.Size, blocksize: int) -> dict[str, torch.Tensor]:
    """The weight's fp32 scales from its block absmax (K a multiple of `blocksize`): `row_*` (N) for the forward,
    `col_*` (K) for the input gradient; `*_inverse` = 448 / amax multiplies before the cast, `*_scale` = amax / 448
    goes to the GEMM."""
    n_rows, n_cols = shape
    blocks = absmax.float().reshape(n_rows, n_cols // blocksize)
    row = blocks.amax(dim=1).clamp_min(AMAX_FLOOR)
    col = blocks.amax(dim=0).clamp_min(AMAX_FLOOR).repeat_interleave(blocksize)
    return {"row_inverse": _divide(E4M3_MAX, row), "row_scale": _divide(row, E4M3_MAX).contiguous(),
            "col_inverse": _divide(E4M3_MAX, col), "col_scale": _divide(col, E4M3_MAX).contiguous()}


def nf4_to_fp8_reference(packed: torch.Tensor, quant_state, scales: dict[str, torch.Tensor],
                         transposed: bool = False) -> torch.Tensor:
    """W8 = e4m3(W * row_inverse) (N x K), or with `transposed` e4m3(W * col_inverse) stored K x N."""
    weight = nf4_weight_fp32(packed, quant_state)
    if transposed:
        return (weight * scales["col_inverse"][None, :]).to(E4M3).t().contiguous()
    return (weight * scales["row_inverse"][:, None]).to(E4M3)


def scaled_mm_reference(a: torch.Tensor, scale_a: torch.Tensor, b_rows: torch.Tensor, scale_b: torch.Tensor,
                        out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """What `torch._scaled_mm(a, b_rows.t(), scale_a, scale_b[None, :])` computes: fp32 sums of the e4m3 products,
    times the row scale of a and the column scale of b, rounded once to `out_dtype`."""
    sums = a.float() @ b_rows.float().t()
    return (sums * scale_a.reshape(-1, 1) * scale_b.reshape(1, -1)).to(out_dtype)


# ------------------------------------------------------------------------------------ the GPU kernels' launchers

ROW_BLOCK, ROW_WARPS = 2048, 8  # quantize_rows: columns per iteration, warps per row
# nf4_to_fp8: rows per program (times one 64-column block) and warps: the fastest of fp8_layer_check.py --sweep on
# an H100 (W 0.174 ms, W^T 0.179 ms for 28,672 x 8,192; results/fp8-b-layer-check.md)
WEIGHT_ROWS, WEIGHT_WARPS = 64, 2


def quantize_rows(x: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows_reference` in one Triton pass (x 2-D, contiguous, 16-bit); q into `out` when given."""
    from nextai.modules import fp8_kernels

    n_rows, n_cols = x.shape
    q = torch.empty(x.shape, dtype=E4M3, device=x.device) if out is None else out
    scale = torch.empty(n_rows, 1, dtype=torch.float32, device=x.device)
    fp8_kernels.quantize_rows_kernel[(n_rows,)](x, q, scale, n_cols, BLOCK=ROW_BLOCK, num_warps=ROW_WARPS,
                                                enable_fp_fusion=False)
    return q, scale


def nf4_to_fp8(packed: torch.Tensor, quant_state, scales: dict[str, torch.Tensor], transposed: bool = False,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """`nf4_to_fp8_reference` in one Triton pass (into `out`, contiguous, when given)."""
    import triton

    from nextai.modules import fp8_kernels
    from nextai.modules.nf4_dequant import absmax_arguments

    n_rows, n_cols = quant_state.shape
    if out is None:
        out = torch.empty((n_cols, n_rows) if transposed else (n_rows, n_cols), dtype=E4M3, device=packed.device)
    table = quant_state.code.to(device=packed.device, dtype=torch.float32)
    absmax = absmax_arguments(quant_state)
    inverse = scales["col_inverse" if transposed else "row_inverse"]
    grid = (triton.cdiv(n_rows, WEIGHT_ROWS), n_cols // quant_state.blocksize)
    fp8_kernels.nf4_to_fp8_kernel[grid](
        packed.reshape(-1).view(torch.uint8), *absmax, table, inverse, out, n_rows, n_cols, BN=WEIGHT_ROWS,
        BS=quant_state.blocksize, NESTED=quant_state.nested, TRANSPOSED=transposed, num_warps=WEIGHT_WARPS,
        enable_fp_fusion=False)
    return out


# ------------------------------------------------------------------------------------ the layers' FP8 GEMMs


def fp8_shape_ok(quant_state) -> bool:
    """The weights the FP8 path takes: NF4, 2-D, K a multiple of the block size (so a block never straddles two
    rows), and N, K multiples of 16 (`torch._scaled_mm`)."""
    if quant_state is None or quant_state.quant_type != "nf4" or len(quant_state.shape) != 2:
        return False
    n_rows, n_cols = quant_state.shape
    return n_cols % quant_state.blocksize == 0 and n_rows % 16 == 0 and n_cols % 16 == 0


class _LastInput:
    """The last input quantized for a forward GEMM and where it came from (the root tensor, held weakly, with the
    view's offset, shape, strides and the version counter, which in-place writes bump)."""

    def __init__(self) -> None:
        self.key = None
        self.value = None

    @staticmethod
    def _identity(x: torch.Tensor) -> tuple | None:
        if x.is_inference():  # inference tensors keep no version counter (Lightning validates in inference mode)
            return None
        root = x._base if x._base is not None else x
        return root, (x.storage_offset(), tuple(x.shape), x.stride(), x._version, x.dtype)

    def get(self, x: torch.Tensor):
        identity = self._identity(x)
        if self.key is None or identity is None:
            return None
        ref, saved = self.key
        return self.value if ref() is identity[0] and saved == identity[1] else None

    def put(self, x: torch.Tensor | None, value) -> None:
        """Remember `value` for `x`; None forgets (the buffer it lives in has just been overwritten)."""
        identity = None if x is None else self._identity(x)
        if identity is None:
            self.key = self.value = None
            return
        self.key, self.value = (weakref.ref(identity[0]), identity[1]), value


class Fp8Matmul:
    """The base GEMMs of the lean 4-bit layers in FP8 (the layers call `matmul` and `input_grad` when their
    dequantizer has them: `lean_lora.frozen_matmul`). Weights whose shape `fp8_shape_ok` refuses, and inputs that are
    not bf16, take the bf16 path. The weight's scales are computed once per weight and kept on its quant state.

    `inference="bf16"`: under `torch.inference_mode` (Lightning's validation, nextai's generation) the bf16 path
    runs, so the validation loss measures the adapter as it is served, on a bf16 base; FP8 is a training-speed
    lever. Training forwards, recomputations (also reentrant checkpointing's no-grad forward) and backward passes
    are never in inference mode, so they all take FP8. `inference="fp8"` rounds there too."""

    def __init__(self, backend: FP8Backend = "triton", fast_accum: bool = FAST_ACCUM,
                 inference: InferenceMatmul = "bf16") -> None:
        self.backend = backend
        self.fast_accum = fast_accum
        self.inference = inference
        self.weights = DequantWorkspace()  # W8 (N x K or K x N)
        self.rows = DequantWorkspace()  # q(x) and q(grad)
        self._bf16 = dequantizer("triton", DequantWorkspace()) if backend == "triton" else bitsandbytes_dequantize
        self._last = _LastInput()

    def __call__(self, packed: torch.Tensor, quant_state, dtype: torch.dtype) -> torch.Tensor:
        """W in `dtype`, as a plain dequantizer (the bf16 path of the weights FP8 does not take)."""
        return self._bf16(packed, quant_state, dtype)

    def takes(self, x: torch.Tensor, packed: torch.Tensor, quant_state) -> bool:
        if x.dtype != torch.bfloat16 or not fp8_shape_ok(quant_state):
            return False
        if self.inference == "bf16" and torch.is_inference_mode_enabled():
            return False
        return self.backend == "reference" or triton_supported(packed, quant_state, torch.bfloat16)

    def scales(self, packed: torch.Tensor, quant_state) -> dict[str, torch.Tensor]:
        cached = getattr(quant_state, "nextai_fp8_scales", None)
        if cached is None or cached["row_scale"].device != packed.device:
            cached = weight_scales(nf4_absmax(quant_state), quant_state.shape, quant_state.blocksize)
            quant_state.nextai_fp8_scales = cached
        return cached

    def _quantize(self, x: torch.Tensor, share: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if share:
            hit = self._last.get(x)
            if hit is not None:
                return hit
        if self.backend == "reference":
            value = quantize_rows_reference(x)
        else:
            value = quantize_rows(x, out=self.rows.take(x.shape, E4M3, x.device))
        self._last.put(x if share else None, value)  # the buffer was just overwritten: nothing older is valid
        return value

    def _weight(self, packed: torch.Tensor, quant_state, transposed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        scales = self.scales(packed, quant_state)
        scale = scales["col_scale" if transposed else "row_scale"]
        if self.backend == "reference":
            return nf4_to_fp8_reference(packed, quant_state, scales, transposed), scale
        n_rows, n_cols = quant_state.shape
        shape = torch.Size((n_cols, n_rows) if transposed else (n_rows, n_cols))
        return nf4_to_fp8(packed, quant_state, scales, transposed, self.weights.take(shape, E4M3, packed.device)), \
            scale

    def _gemm(self, a, scale_a, b_rows, scale_b) -> torch.Tensor:
        if self.backend == "reference":
            return scaled_mm_reference(a, scale_a, b_rows, scale_b)
        return torch._scaled_mm(a, b_rows.t(), scale_a=scale_a, scale_b=scale_b.reshape(1, -1),
                                out_dtype=torch.bfloat16, use_fast_accum=self.fast_accum)

    def matmul(self, x: torch.Tensor, packed: torch.Tensor, quant_state) -> torch.Tensor:
        """x W^T (x: M x K, contiguous)."""
        if not self.takes(x, packed, quant_state):
            return x @ self(packed, quant_state, x.dtype).t()
        q, scale = self._quantize(x, share=True)
        weight, weight_scale = self._weight(packed, quant_state, transposed=False)
        return self._gemm(q, scale, weight, weight_scale)

    def input_grad(self, grad: torch.Tensor, packed: torch.Tensor, quant_state) -> torch.Tensor:
        """grad W (grad: M x N)."""
        if not self.takes(grad, packed, quant_state):
            return grad @ self(packed, quant_state, grad.dtype)
        q, scale = self._quantize(grad.contiguous(), share=False)
        weight_t, weight_scale = self._weight(packed, quant_state, transposed=True)
        return self._gemm(q, scale, weight_t, weight_scale)

    def reserve(self, largest: dict[torch.device, int]) -> None:
        """Room now for the largest weight on each device (before a memory plan measures a layer)."""
        for device, numel in largest.items():
            self.weights.reserve(numel, E4M3, device)

    def nbytes(self) -> int:
        return self.weights.nbytes() + self.rows.nbytes()


def enable_fp8_base_matmuls(model, backend: FP8Backend = "triton", inference: InferenceMatmul = "bf16") -> str:
    """Give every lean 4-bit layer of `model` (made by `lean_lora.make_lean` with `lean_lora=True`) FP8 base GEMMs,
    turning the plain bitsandbytes 4-bit linears into `DequantLinear4bit` first; one line for the log. peft's own
    LoRA layers (lean LoRA off) compute their base in bf16, so they are refused. `inference`: see `Fp8Matmul`."""
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as PeftLinear4bit

    from nextai.modules.lean_lora import DequantLinear4bit, LeanLoraLinear4bit

    modules = list(model.modules())
    if any(type(m) is PeftLinear4bit for m in modules):
        raise NextaiError("model.base_matmul fp8 needs model.lean_lora true (peft's own LoRA layers compute the "
                          "frozen base in bf16)")
    lean_bases = {id(m.get_base_layer()) for m in modules if type(m) is LeanLoraLinear4bit}
    fp8 = Fp8Matmul(backend, inference=inference)
    taken = kept = 0
    largest: dict[torch.device, int] = {}
    for module in modules:
        if type(module) is bnb.nn.Linear4bit and id(module) not in lean_bases and module.bias is None:
            module.__class__ = DequantLinear4bit
        if type(module) not in (LeanLoraLinear4bit, DequantLinear4bit):
            continue
        module.nextai_dequantize = fp8
        base = module.get_base_layer() if isinstance(module, LeanLoraLinear4bit) else module
        state = base.weight.quant_state
        if fp8_shape_ok(state) and (base.compute_dtype in (None, torch.bfloat16)):
            taken += 1
            if base.weight.device.type == "cuda":
                largest[base.weight.device] = max(largest.get(base.weight.device, 0), state.shape.numel())
        else:
            kept += 1
    if not taken:
        raise NextaiError("model.base_matmul fp8: the model has no NF4 4-bit linear layer FP8 can take")
    if backend == "triton":
        fp8.reserve(largest)
    rest = f", {kept} kept bf16 (not NF4 with N, K multiples of 16 and bf16 compute)" if kept else ""
    where = "Triton + torch._scaled_mm" if backend == "triton" else "torch reference"
    return (f"FP8 (e4m3) base GEMMs in {taken} 4-bit layers ({where}; rowwise scales, "
            f"{fp8.weights.nbytes() / 2**20:.0f} MiB weight buffer){rest}; LoRA, norms, attention and loss bf16; "
            f"inference mode (validation, generation) {inference}")
