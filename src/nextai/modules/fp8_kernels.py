"""The Triton kernels of `nextai.modules.fp8` (imported only when they run: Triton is a CUDA dependency). Each one is
the GPU form of a reference function there, which states the rounding; `tests/e2e/test_fp8_gpu.py` compares them.

Both kernels compute in fp32 with the same operations, in the same order, as the reference: scales are divided
with `div_rn` (IEEE division; Triton's `/` is an approximate `div.full.f32`), products are not fused into FMAs
(the launcher passes `enable_fp_fusion=False`), and the cast to e4m3 rounds to nearest even, as torch's does.
"""

import triton
import triton.language as tl

E4M3_MAX = tl.constexpr(448.0)
AMAX_FLOOR = tl.constexpr(1e-12)  # an all-zero row gets scale AMAX_FLOOR / 448, not a division by zero


@triton.jit
def quantize_rows_kernel(x_ptr, q_ptr, scale_ptr, n_cols: tl.constexpr, BLOCK: tl.constexpr):
    """One row of x (16-bit, contiguous) per program: amax over the row, then q = e4m3(x * (448 / amax)) and
    scale = amax / 448. The second pass reads the row again (from L2: a 28,672-column bf16 row is 56 KiB). The
    width is a compile-time constant (a model has a handful), which also keeps the loops static for Triton's
    interpreter (numpy 2.4 refuses its runtime loop bounds)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n_cols
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    row_amax = tl.maximum(tl.max(amax, axis=0), AMAX_FLOOR)
    inverse = tl.math.div_rn(E4M3_MAX, row_amax)
    tl.store(scale_ptr + row, tl.math.div_rn(row_amax, E4M3_MAX))
    q_row = q_ptr + row * n_cols
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        tl.store(q_row + cols, (x * inverse).to(q_ptr.dtype.element_ty), mask=cols < n_cols)


@triton.jit
def nf4_to_fp8_kernel(packed_ptr, absmax_ptr, absmax2_ptr, code2_ptr, offset_ptr, table_ptr, inverse_ptr, out_ptr,
                      n_rows, n_cols, BN: tl.constexpr, BS: tl.constexpr, NESTED: tl.constexpr,
                      TRANSPOSED: tl.constexpr):
    """BN rows (output features) x one quantization block of BS columns: w = table[nibble] * absmax (fp32, as the
    bf16 kernel computes it), then e4m3(w * inverse): `inverse` per row (TRANSPOSED false: out is W, rows x cols)
    or per column (TRANSPOSED true: out is W^T, cols x rows, the layout `torch._scaled_mm` wants for the
    input-gradient GEMM). The columns hold whole blocks (n_cols % BS == 0), so block b of row n is n * n_cols / BS
    + column block."""
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    column_block = tl.program_id(1)
    row_ok = rows < n_rows
    blocks = rows.to(tl.int64) * (n_cols // BS) + column_block
    if NESTED:
        q = tl.load(absmax_ptr + blocks, mask=row_ok, other=0).to(tl.int32)
        scale = (tl.load(code2_ptr + q, eviction_policy="evict_last")
                 * tl.load(absmax2_ptr + (blocks >> 8), mask=row_ok, other=0.0, eviction_policy="evict_last"))
        scale = scale + tl.load(offset_ptr)
    else:
        scale = tl.load(absmax_ptr + blocks, mask=row_ok, other=0.0)
    half = tl.arange(0, BS // 2)
    byte = tl.load(packed_ptr + blocks[:, None] * (BS // 2) + half[None, :], mask=row_ok[:, None], other=0)
    byte = byte.to(tl.int32)
    high = tl.load(table_ptr + (byte >> 4), eviction_policy="evict_last")  # the even element: the high nibble
    low = tl.load(table_ptr + (byte & 15), eviction_policy="evict_last")
    weight = tl.interleave(high, low) * scale[:, None]  # BN x BS, fp32
    cols = column_block * BS + tl.arange(0, BS)
    fp8 = out_ptr.dtype.element_ty
    if TRANSPOSED:
        inverse = tl.load(inverse_ptr + cols)
        q8 = (weight * inverse[None, :]).to(fp8)
        tl.store(out_ptr + cols[None, :].to(tl.int64) * n_rows + rows[:, None], q8, mask=row_ok[:, None])
    else:
        inverse = tl.load(inverse_ptr + rows, mask=row_ok, other=0.0)
        q8 = (weight * inverse[:, None]).to(fp8)
        tl.store(out_ptr + rows[:, None].to(tl.int64) * n_cols + cols[None, :], q8, mask=row_ok[:, None])
