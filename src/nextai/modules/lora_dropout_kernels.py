"""The fused Triton kernels of `lora_dropout.TritonDropout` (imported only when they run: Triton is a CUDA
dependency). The mask's layout is described there; both kernels draw it through `keep_tile`.

The mask is multiplied in, not selected with `tl.where`: Triton 3.6 (torch 2.11's) failed to compile the `where`
form for bf16 tiles whose width it can vectorize (`PassManager::run failed` in ConvertTritonGPUToLLVM)."""

import triton
import triton.language as tl


@triton.jit
def _halves(word):
    return tl.join(word & 0xFFFF, word >> 16)


@triton.jit
def keep_tile(seed, threshold, rows, first_column, n_in, BT: tl.constexpr, BK: tl.constexpr):
    """1.0 where the value at (row, column) is kept, else 0.0, for rows x [first_column, first_column + BK), fp32.
    Counter (row, column // 8) gives the eight 16-bit draws of columns 8g .. 8g + 7 (first_column is a multiple
    of 8); `join` nests them as [half, word % 2, word // 2], which the reshape flattens in that order."""
    groups = (first_column // 8) + tl.arange(0, BK // 8)
    counters = rows[:, None] * tl.cdiv(n_in, 8) + groups[None, :]
    w0, w1, w2, w3 = tl.randint4x(seed, counters)
    draws = tl.join(tl.join(_halves(w0), _halves(w1)), tl.join(_halves(w2), _halves(w3)))
    return (tl.reshape(draws, (BT, BK)) >= threshold).to(tl.float32)


@triton.jit
def project_kernel(x_ptr, a_ptr, out_ptr, n_tokens, n_in, columns_per_split, seed, threshold,
                   DROP: tl.constexpr, RANK: tl.constexpr, RP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                   PRECISION: tl.constexpr):
    """Partial (x * m) A^T of BT rows over one split of the columns: out[split] (fp32, T x r)."""
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    split = tl.program_id(1)
    row_ok = rows < n_tokens
    ranks = tl.arange(0, RP)
    acc = tl.zeros((BT, RP), dtype=tl.float32)
    first = split * columns_per_split
    last = tl.minimum(first + columns_per_split, n_in)
    for start in range(first, last, BK):
        cols = start + tl.arange(0, BK)
        col_ok = cols < last
        x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * n_in + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                    other=0.0)
        if DROP:
            x = x * keep_tile(seed, threshold, rows, start, n_in, BT, BK).to(x.dtype)
        a = tl.load(a_ptr + ranks[None, :] * n_in + cols[:, None], mask=col_ok[:, None] & (ranks < RANK)[None, :],
                    other=0.0)  # A^T's tile: BK x RP
        acc += tl.dot(x, a, input_precision=PRECISION)
    out_ptr += split.to(tl.int64) * n_tokens * RANK
    tl.store(out_ptr + rows[:, None] * RANK + ranks[None, :], acc, mask=row_ok[:, None] & (ranks < RANK)[None, :])


@triton.jit
def backward_kernel(x_ptr, a_ptr, g_ptr, gx_ptr, out_ptr, n_tokens, n_in, rows_per_split, seed, threshold,
                    DROP: tl.constexpr, HAS_GX: tl.constexpr, RANK: tl.constexpr, RP: tl.constexpr,
                    BT: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    """BK columns over one split of the rows: partial grad_A (out[split], fp32, r x K) and, with HAS_GX,
    grad_x += (grad_xa A) * m on those columns."""
    first_column = tl.program_id(0) * BK
    cols = first_column + tl.arange(0, BK)
    split = tl.program_id(1)
    col_ok = cols < n_in
    ranks = tl.arange(0, RP)
    rank_ok = ranks < RANK
    a = tl.load(a_ptr + ranks[:, None] * n_in + cols[None, :], mask=rank_ok[:, None] & col_ok[None, :], other=0.0)
    acc = tl.zeros((RP, BK), dtype=tl.float32)
    first = split * rows_per_split
    last = tl.minimum(first + rows_per_split, n_tokens)
    for start in range(first, last, BT):
        rows = start + tl.arange(0, BT)
        row_ok = rows < last
        inside = row_ok[:, None] & col_ok[None, :]
        index = rows.to(tl.int64)[:, None] * n_in + cols[None, :]
        x = tl.load(x_ptr + index, mask=inside, other=0.0)
        g = tl.load(g_ptr + rows[:, None] * RANK + ranks[None, :], mask=row_ok[:, None] & rank_ok[None, :],
                    other=0.0)  # grad_xa's rows: BT x RP
        if HAS_GX:
            gx = tl.load(gx_ptr + index, mask=inside, other=0.0)
        if DROP:
            kept = keep_tile(seed, threshold, rows, first_column, n_in, BT, BK)
            x = x * kept.to(x.dtype)
        acc += tl.dot(tl.trans(g), x, input_precision=PRECISION)
        if HAS_GX:
            lora = tl.dot(g, a, input_precision=PRECISION)  # (grad_xa A) for this tile, never written out
            if DROP:
                lora = lora * kept
            tl.store(gx_ptr + index, (gx.to(tl.float32) + lora).to(gx_ptr.dtype.element_ty), mask=inside)
    out_ptr += split.to(tl.int64) * RANK * n_in
    tl.store(out_ptr + ranks[:, None] * n_in + cols[None, :], acc, mask=rank_ok[:, None] & col_ok[None, :])
