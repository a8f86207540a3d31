"""LoRA's input side with dropout: the mask is drawn again wherever it is needed, never kept.

The lean LoRA layer needs three products of its input x (T x K), LoRA's A (r x K) and the dropout mask m:
- forward: `project(x, A)` = (x * m) A^T, a T x r result;
- backward: `backward_(x, A, grad_xa, grad_x)` returns grad_A = grad_xa^T (x * m) and, when grad_x is given, adds
  (grad_xa A) * m to it in place.
m keeps each value with probability 1 - p and is fixed by its seed, so the backward pass and a recomputed forward
draw the same mask. The 1 / (1 - p) rescaling is the caller's (it folds it into LoRA's scale).

- `TorchDropout` (any device): m from a torch generator seeded with the seed (`bernoulli_`), written out, then
  multiplied in; cuBLAS GEMMs.
- `TritonDropout` (CUDA): two fused Triton kernels. The forward reads x once; the backward reads x once and updates
  grad_x in place, computing (grad_xa A) on the fly. No mask, masked input or input-sized product is ever written.
  At the 70B shape and 4096 tokens that is ~1.8 GB less memory traffic per decoder layer and micro step than the
  masked copies and skinny GEMMs it replaces (o_proj's and down_proj's inputs). p = 0 takes the same kernels
  without drawing. The draws differ from torch's, so a run keeps one path (the CPU always takes torch's).

Triton's mask: Philox (`tl.randint4x`, 10 rounds) gives four 32-bit words per counter; each word gives two 16-bit
draws, and a value is kept when its draw is at least round(p * 65536), so p is honoured to 1 / 65536 (0.05 keeps
with probability 0.9499969). Counter (row, column // 8) serves the 8 values from column 8g to 8g + 7: value j of
the group takes half j // 4 (low, high) of word 2 (j % 2) + (j // 2) % 2. Each thread then draws for the 8
neighbouring columns it loads, whatever the tile; both kernels draw through `keep_tile`, and take T * K < 2**34.
"""

import functools

import torch

PROJECT_TILE = (64, 64)  # rows a forward program owns, columns it reads per iteration
BACKWARD_TILE = (64, 64)  # rows a backward program reads per iteration, columns it owns
WAVES = 4  # aim for at least this many programs per streaming multiprocessor
WARPS, STAGES = 4, 3  # launch settings of both kernels (the fastest of run G's sweep)


def keep_mask(shape: torch.Size, p: float, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The torch path's mask (1 keeps, 0 drops, each kept with probability 1 - p) that `seed` always draws."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return torch.empty(shape, device=device, dtype=dtype).bernoulli_(1.0 - p, generator=generator)


class TorchDropout:
    @staticmethod
    def project(x: torch.Tensor, lora_A: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        """(x * m) A^T."""
        dropped = x * keep_mask(x.shape, p, seed, x.device, x.dtype) if p else x
        return dropped @ lora_A.t()

    @staticmethod
    def backward_(x: torch.Tensor, lora_A: torch.Tensor, grad_xa: torch.Tensor, grad_x: torch.Tensor | None,
                  p: float, seed: int) -> torch.Tensor:
        """grad_A = grad_xa^T (x * m); grad_x += (grad_xa A) * m when grad_x is given."""
        mask = keep_mask(x.shape, p, seed, x.device, x.dtype) if p else None
        grad_A = grad_xa.t() @ (x * mask if p else x)
        if grad_x is not None:
            if p:
                grad_x.addcmul_(grad_xa @ lora_A, mask)
            else:
                grad_x.addmm_(grad_xa, lora_A)
        return grad_A


@functools.cache
def _compiled():
    from nextai.modules import lora_dropout_kernels

    return lora_dropout_kernels.project_kernel, lora_dropout_kernels.backward_kernel


@functools.cache
def _processors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _threshold(p: float) -> int:
    return min(round(p * 65536), 65535)


def _rank_tile(rank: int) -> int:
    return max(16, 1 << (rank - 1).bit_length())  # tl.dot needs every dimension of at least 16


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs are multiplied exactly; tf32 is ignored else


def _check(x: torch.Tensor, lora_A: torch.Tensor, *others: torch.Tensor | None) -> None:
    if not (x.is_cuda and x.dim() == 2 and x.is_contiguous() and x.numel() < 2**34):
        raise ValueError(f"the Triton LoRA dropout takes a contiguous 2-D CUDA input of under 2**34 values, got "
                         f"{tuple(x.shape)} on {x.device}")
    for t in (lora_A, *others):
        if t is not None and (t.dtype != x.dtype or not t.is_contiguous()):
            raise ValueError(f"the Triton LoRA dropout takes contiguous {x.dtype} operands, got {t.dtype} "
                             f"{tuple(t.shape)}")


def _split(length: int, tile: int, other_blocks: int, device: torch.device) -> tuple[int, int]:
    """`length` (columns or rows) cut into splits of whole tiles, enough that splits x `other_blocks` programs fill
    the GPU: (number of splits, length of each)."""
    blocks = -(-length // tile)
    splits = max(1, min(blocks, -(-WAVES * _processors(device) // other_blocks)))
    per_split = -(-blocks // splits) * tile
    return -(-length // per_split), per_split


class TritonDropout:
    """The fused Triton kernels (CUDA); they allocate only the small fp32 partial sums they add up."""

    @staticmethod
    def project(x: torch.Tensor, lora_A: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        """(x * m) A^T."""
        _check(x, lora_A)
        tokens, columns = x.shape
        rank = lora_A.shape[0]
        rows, width = PROJECT_TILE
        row_blocks = -(-tokens // rows)
        splits, columns_per_split = _split(columns, width, row_blocks, x.device)
        partial = torch.empty(splits, tokens, rank, device=x.device, dtype=torch.float32)
        _compiled()[0][(row_blocks, splits)](
            x, lora_A, partial, tokens, columns, columns_per_split, seed, _threshold(p), DROP=bool(p), RANK=rank,
            RP=_rank_tile(rank), BT=rows, BK=width, PRECISION=_precision(x.dtype), num_warps=WARPS,
            num_stages=STAGES)
        return partial.sum(0).to(x.dtype)

    @staticmethod
    def backward_(x: torch.Tensor, lora_A: torch.Tensor, grad_xa: torch.Tensor, grad_x: torch.Tensor | None,
                  p: float, seed: int) -> torch.Tensor:
        """grad_A = grad_xa^T (x * m) (fp32); grad_x += (grad_xa A) * m when grad_x is given."""
        _check(x, lora_A, grad_xa, grad_x)
        if grad_x is not None and grad_x.shape != x.shape:
            raise ValueError(f"grad_x is {tuple(grad_x.shape)}, x is {tuple(x.shape)}")
        tokens, columns = x.shape
        rank = lora_A.shape[0]
        rows, width = BACKWARD_TILE
        column_blocks = -(-columns // width)
        splits, rows_per_split = _split(tokens, rows, column_blocks, x.device)
        partial = torch.empty(splits, rank, columns, device=x.device, dtype=torch.float32)
        _compiled()[1][(column_blocks, splits)](
            x, lora_A, grad_xa, grad_x if grad_x is not None else x, partial, tokens, columns, rows_per_split, seed,
            _threshold(p), DROP=bool(p), HAS_GX=grad_x is not None, RANK=rank, RP=_rank_tile(rank), BT=rows,
            BK=width, PRECISION=_precision(x.dtype), num_warps=WARPS, num_stages=STAGES)
        return partial.sum(0)
