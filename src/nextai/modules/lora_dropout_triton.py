"""LoRA's input side with dropout in two fused Triton kernels (CUDA): no mask and no masked input in memory.

The lean LoRA layer computes `xa = (x * m) A^T` in the forward pass and, in the backward pass, `grad_A = grad_xa^T
(x * m)` and `grad_x += (grad_xa A) * m`. In torch that is a drawn mask, a masked copy of x and separate GEMMs and
elementwise passes: about 4 GB of memory traffic per 70B decoder layer for down_proj's 28,672-wide input at 4096
tokens. Here the mask is never stored: each kernel draws it where it needs it from Philox (`tl.rand(seed, element
index)`), so the forward reads x once, and the backward reads x and updates grad_x in place once. The masks are
Bernoulli(1 - p) like torch's, but other draws than the torch path's (which CPU runs use): a run keeps one path.

Each backward program owns a block of columns and walks all tokens, so grad_A is summed in a fixed order:
deterministic, no atomics.
"""

import torch

TOKENS, COLUMNS = 64, 64  # tile of x a program handles (rows, columns)
BACKWARD_COLUMNS = 32  # columns per backward program, which walks all tokens (more programs for 8,192 columns)


def _kernels():
    import triton
    import triton.language as tl

    # The rank is small (4-64): its products are unrolled broadcasts and sums, not tl.dot, which needs every
    # dimension of at least 16 (and whose layouts Triton 3.5 failed to lower in the masked update below).
    @triton.jit
    def forward_kernel(x_ptr, a_ptr, xa_ptr, n_tokens, n_in, seed, p,
                       RANK: tl.constexpr, RP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
        rows = tl.program_id(0) * BT + tl.arange(0, BT)
        ranks = tl.arange(0, RP)
        acc = tl.zeros((BT, RP), dtype=tl.float32)
        for start in range(0, n_in, BK):
            cols = start + tl.arange(0, BK)
            inside = (rows < n_tokens)[:, None] & (cols < n_in)[None, :]
            index = rows[:, None] * n_in + cols[None, :]
            x = tl.load(x_ptr + index, mask=inside, other=0.0).to(tl.float32)
            x = tl.where(tl.rand(seed, index) >= p, x, 0.0)
            for j in tl.static_range(RANK):
                a = tl.load(a_ptr + j * n_in + cols, mask=cols < n_in, other=0.0).to(tl.float32)
                acc += tl.where(ranks[None, :] == j, tl.sum(x * a[None, :], axis=1)[:, None], 0.0)
        out = xa_ptr + rows[:, None] * RANK + ranks[None, :]
        tl.store(out, acc.to(xa_ptr.dtype.element_ty), mask=(rows < n_tokens)[:, None] & (ranks < RANK)[None, :])

    @triton.jit
    def backward_kernel(x_ptr, a_ptr, gxa_ptr, gx_ptr, ga_ptr, n_tokens, n_in, seed, p,
                        HAS_GX: tl.constexpr, RANK: tl.constexpr, RP: tl.constexpr, BT: tl.constexpr,
                        BK: tl.constexpr):
        # One program per block of columns, walking down all tokens: grad_A's columns are summed in one place, in a
        # fixed order (deterministic, no atomics).
        cols = tl.program_id(0) * BK + tl.arange(0, BK)
        ranks = tl.arange(0, RP)
        grad_a = tl.zeros((RP, BK), dtype=tl.float32)
        for start in range(0, n_tokens, BT):
            rows = start + tl.arange(0, BT)
            inside = (rows < n_tokens)[:, None] & (cols < n_in)[None, :]
            index = rows[:, None] * n_in + cols[None, :]
            keep = tl.rand(seed, index) >= p
            x = tl.load(x_ptr + index, mask=inside, other=0.0).to(tl.float32)
            x = tl.where(keep, x, 0.0)
            lora = tl.zeros((BT, BK), dtype=tl.float32)
            for j in tl.static_range(RANK):
                g = tl.load(gxa_ptr + rows * RANK + j, mask=rows < n_tokens, other=0.0).to(tl.float32)
                grad_a += tl.where(ranks[:, None] == j, tl.sum(g[:, None] * x, axis=0)[None, :], 0.0)
                if HAS_GX:
                    a = tl.load(a_ptr + j * n_in + cols, mask=cols < n_in, other=0.0).to(tl.float32)
                    lora += g[:, None] * a[None, :]
            if HAS_GX:
                gx = tl.load(gx_ptr + index, mask=inside, other=0.0).to(tl.float32)
                tl.store(gx_ptr + index, (gx + tl.where(keep, lora, 0.0)).to(gx_ptr.dtype.element_ty),
                         mask=inside)
        tl.store(ga_ptr + ranks[:, None] * n_in + cols[None, :], grad_a,
                 mask=(ranks < RANK)[:, None] & (cols < n_in)[None, :])

    @triton.jit
    def mask_kernel(out_ptr, n_elements, seed, p, BLOCK: tl.constexpr):
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + index, tl.rand(seed, index) >= p, mask=index < n_elements)

    return forward_kernel, backward_kernel, mask_kernel


_KERNELS = None


def _get():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _kernels()
    return _KERNELS


def philox_seed(seed: int) -> int:
    return seed % (2**31 - 1)


def _rank_tile(rank: int) -> int:
    return 1 << (rank - 1).bit_length()  # the rank rounded up to a power of two (a tile dimension)


def _check(x: torch.Tensor) -> None:
    if x.dim() != 2 or not x.is_contiguous() or x.numel() >= 2**31:
        raise ValueError(f"the fused LoRA dropout takes a contiguous 2-D input of under 2**31 values, "
                         f"got {tuple(x.shape)}")


def dropped_lora_a(x: torch.Tensor, lora_A: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """(x * m) A^T with the mask m that `seed` draws (T x r, in x's dtype)."""
    import triton

    _check(x)
    forward_kernel, _, _ = _get()
    n_tokens, n_in = x.shape
    rank = lora_A.shape[0]
    xa = torch.empty(n_tokens, rank, dtype=x.dtype, device=x.device)
    forward_kernel[(triton.cdiv(n_tokens, TOKENS),)](x, lora_A.contiguous(), xa, n_tokens, n_in, philox_seed(seed),
                                                      p, RANK=rank, RP=_rank_tile(rank), BT=TOKENS, BK=COLUMNS)
    return xa


def dropped_lora_a_backward(x: torch.Tensor, lora_A: torch.Tensor, grad_xa: torch.Tensor, p: float, seed: int,
                            grad_x: torch.Tensor | None) -> torch.Tensor:
    """grad_A = grad_xa^T (x * m) (fp32); and grad_x += (grad_xa A) * m in place when grad_x is given."""
    import triton

    _check(x)
    _, backward_kernel, _ = _get()
    n_tokens, n_in = x.shape
    rank = lora_A.shape[0]
    grad_A = torch.empty(rank, n_in, dtype=torch.float32, device=x.device)
    if grad_x is not None:
        _check(grad_x)
    backward_kernel[(triton.cdiv(n_in, BACKWARD_COLUMNS),)](
        x, lora_A.contiguous(), grad_xa.contiguous(), grad_x if grad_x is not None else x, grad_A, n_tokens, n_in,
        philox_seed(seed), p, HAS_GX=grad_x is not None, RANK=rank, RP=_rank_tile(rank), BT=TOKENS,
        BK=BACKWARD_COLUMNS)
    return grad_A


def keep_mask(shape: tuple[int, int], p: float, seed: int, device: torch.device) -> torch.Tensor:
    """The mask these kernels draw for `seed` (True keeps), materialized: for tests."""
    import triton

    _, _, mask_kernel = _get()
    out = torch.empty(shape, dtype=torch.bool, device=device)
    mask_kernel[(triton.cdiv(out.numel(), 1024),)](out, out.numel(), philox_seed(seed), p, BLOCK=1024)
    return out
