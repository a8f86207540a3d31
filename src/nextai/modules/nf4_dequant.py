"""Dequantize a bitsandbytes NF4 weight to bf16/fp16: bitsandbytes' own CUDA kernels, or one fused Triton kernel.

Every 4-bit linear dequantizes its whole weight before each GEMM (forward, recomputation, backward); at 70B that is
8-16 % of the GPU time (`benchmarks/results/profile-70b-layers-*.md`). bitsandbytes first dequantizes the doubly
quantized block scales to an fp32 copy (a second kernel), then the weight. `triton_dequantize_nf4` does both in
one pass: per block, the 8-bit scale is looked up in the nested code, multiplied by its group's fp32 scale and
shifted by the offset, then both nibbles of each byte are looked up in the NF4 table and scaled, in fp32 and
rounded once, as bitsandbytes does. On an H200 it moves 3.2 TB/s where bitsandbytes moves 1.9-2.0 (the large
70B weights; `benchmarks/results/dequant-speed.md`). Neither bitsandbytes (its Triton kernels are for Intel GPUs,
take fp32 scales and run slower here), Liger-kernel nor torch provides this;
`tests/e2e/test_nf4_dequant_gpu.py` checks it bit for bit against bitsandbytes.
"""

from typing import Literal

import torch

DequantKernel = Literal["auto", "bitsandbytes", "triton"]


def resolve_kernel(kernel: DequantKernel, device_type: str) -> str:
    """`auto`: the Triton kernel on CUDA when Triton imports, else bitsandbytes'."""
    if kernel != "auto":
        return kernel
    import importlib.util

    return "triton" if device_type == "cuda" and importlib.util.find_spec("triton") is not None else "bitsandbytes"


def bitsandbytes_dequantize(packed: torch.Tensor, quant_state, dtype: torch.dtype) -> torch.Tensor:
    """The reference path (any device): bitsandbytes' own kernels, written straight in `dtype` as its forward
    GEMM does (`F.dequantize_4bit` would round to the dtype the weight was quantized from first)."""
    import bitsandbytes.functional as F

    absmax = quant_state.absmax
    if quant_state.nested:
        absmax = (F.dequantize_blockwise(quant_state.absmax, quant_state.state2) + quant_state.offset).float()
    return torch.ops.bitsandbytes.dequantize_4bit.default(packed, absmax, quant_state.blocksize,
                                                          quant_state.quant_type, quant_state.shape, dtype)


def triton_supported(packed: torch.Tensor, quant_state, dtype: torch.dtype) -> bool:
    """The Triton kernel would handle any 16-entry table but only does what it was tested on: NF4, CUDA, a
    16-bit output, block sizes that are powers of two from 32, nested scales in groups of 256 (or none)."""
    return (packed.is_cuda and quant_state.quant_type == "nf4" and dtype in (torch.bfloat16, torch.float16)
            and quant_state.blocksize >= 32 and quant_state.blocksize & (quant_state.blocksize - 1) == 0
            and (not quant_state.nested or quant_state.state2.blocksize == 256))


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def dequantize_nf4_kernel(packed_ptr, scale_ptr, scale2_ptr, code2_ptr, offset_ptr, table_ptr, out_ptr,
                              n_elements, n_bytes, n_blocks, HALF: tl.constexpr, NESTED: tl.constexpr,
                              BLOCKS: tl.constexpr):
        # One row per quantization block: HALF bytes in, 2 * HALF values out.
        rows = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
        row_ok = rows < n_blocks
        if NESTED:
            q = tl.load(scale_ptr + rows, mask=row_ok, other=0).to(tl.int32)
            # the small tables stay cached (evict_last); groups of 256 blocks share a second-level scale
            scale = (tl.load(code2_ptr + q, eviction_policy="evict_last")
                     * tl.load(scale2_ptr + (rows >> 8), mask=row_ok, other=0.0, eviction_policy="evict_last"))
            scale = scale + tl.load(offset_ptr)
        else:
            scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
        cols = tl.arange(0, HALF)
        byte_index = rows[:, None] * HALF + cols[None, :]
        # compared in bytes (not `2 * byte < n_elements`), so Triton sees the mask constant along a row and
        # vectorizes the loads
        byte = tl.load(packed_ptr + byte_index, mask=byte_index < n_bytes, other=0).to(tl.int32)
        # NF4 values from the 16-entry table (the even element in the high nibble; a tree of selects in
        # registers measured slower),
        # rounded to the output dtype before interleaving: half the register shuffling of interleaving fp32
        dtype = out_ptr.dtype.element_ty
        high = (tl.load(table_ptr + (byte >> 4), eviction_policy="evict_last") * scale[:, None]).to(dtype)
        low = (tl.load(table_ptr + (byte & 15), eviction_policy="evict_last") * scale[:, None]).to(dtype)
        out_index = rows[:, None] * (2 * HALF) + tl.arange(0, 2 * HALF)[None, :]
        tl.store(out_ptr + out_index, tl.interleave(high, low), mask=out_index < n_elements)

    return dequantize_nf4_kernel


_KERNEL = None
# Quantization blocks and warps per program: among the fastest of benchmarks/scripts/dequant_speed.py's sweep on an
# H200 (results/dequant-speed.json).
BLOCKS, WARPS = 64, 4


def absmax_arguments(quant_state) -> tuple[torch.Tensor, ...]:
    """The four block-scale arguments of nextai's NF4 kernels (this one and fp8_kernels'): with double quantization
    the 8-bit absmax, its own absmax and code and the offset; without it, the fp32 absmax (the others unused)."""
    if quant_state.nested:
        state2 = quant_state.state2
        return quant_state.absmax, state2.absmax, state2.code, quant_state.offset.reshape(1)
    absmax = quant_state.absmax.float()
    return absmax, absmax, absmax, absmax


def triton_dequantize_nf4(packed: torch.Tensor, quant_state, dtype: torch.dtype, blocks: int = BLOCKS,
                          warps: int = WARPS, out: torch.Tensor | None = None) -> torch.Tensor:
    """The weight of shape `quant_state.shape` in `dtype` (bf16 or fp16), in one fused kernel (into `out`, a
    contiguous tensor of that shape and dtype, when given)."""
    import triton

    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _kernel()
    if out is None:
        out = torch.empty(quant_state.shape, dtype=dtype, device=packed.device)
    n_elements = out.numel()
    n_blocks = triton.cdiv(n_elements, quant_state.blocksize)
    table = quant_state.code.to(device=packed.device, dtype=torch.float32)
    scales = absmax_arguments(quant_state)
    _KERNEL[(triton.cdiv(n_blocks, blocks),)](
        packed.reshape(-1).view(torch.uint8), *scales, table, out, n_elements, (n_elements + 1) // 2, n_blocks,
        HALF=quant_state.blocksize // 2, NESTED=quant_state.nested, BLOCKS=blocks, num_warps=warps,
        enable_fp_fusion=False)  # no FMA: scale = code * absmax + offset rounds twice, as in bitsandbytes
    return out


class DequantWorkspace:
    """One buffer per device and dtype that every dequantized weight is written into.

    Each dequantized weight is read by one GEMM, enqueued before the next weight is dequantized on the same stream,
    so one buffer serves them all. Without it, weights of 0.1-0.5 GB (70B) come and go from torch's caching
    allocator two or three times per layer and step; under a memory cap they fragment it, and each allocator retry
    then waits for every queued kernel (measured: 82 retries in 9 capped 70B micro steps)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @staticmethod
    def _key(dtype: torch.dtype, device: torch.device) -> tuple[torch.device, torch.dtype]:
        if device.type == "cuda" and device.index is None:  # `cuda` and `cuda:0` are one buffer
            device = torch.device("cuda", torch.cuda.current_device())
        return device, dtype

    def reserve(self, numel: int, dtype: torch.dtype, device: torch.device) -> None:
        """Allocate now (before a memory plan measures what a layer adds) room for a weight of `numel` values."""
        key = self._key(dtype, device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            self._buffers[key] = None  # free the smaller one first
            self._buffers[key] = torch.empty(numel, dtype=dtype, device=key[0])

    def take(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A view for a dequantized weight, growing the buffer when the weight is larger."""
        self.reserve(shape.numel(), dtype, device)
        return self.borrow(shape, dtype, device)

    def borrow(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """A view of the buffer for a short-lived tensor (written and read before the next dequantization, on the
        same stream), or None when it does not fit; never grows the buffer. Not for compiled graphs, which allocate
        their own (`dequantizer` checks that once per call)."""
        buffer = self._buffers.get(self._key(dtype, device))
        numel = shape.numel()
        if buffer is None or buffer.numel() < numel:
            return None
        return buffer[:numel].view(shape)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


def dequantizer(kernel: DequantKernel, workspace: DequantWorkspace | None = None):
    """A function `(packed weight, quant_state, dtype) -> weight` for the chosen kernel; the Triton one falls
    back to bitsandbytes for weights it does not handle (see `triton_supported`) and writes into `workspace`
    when given (the result is then valid until the next call on that device)."""
    if kernel == "bitsandbytes":
        return bitsandbytes_dequantize

    def dequantize(packed: torch.Tensor, quant_state, dtype: torch.dtype) -> torch.Tensor:
        if triton_supported(packed, quant_state, dtype):
            shared = workspace is not None and not torch.compiler.is_compiling()  # compiled graphs allocate their own
            out = workspace.take(torch.Size(quant_state.shape), dtype, packed.device) if shared else None
            return triton_dequantize_nf4(packed, quant_state, dtype, out=out)
        return bitsandbytes_dequantize(packed, quant_state, dtype)

    return dequantize
