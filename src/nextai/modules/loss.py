"""The causal-LM loss without full-vocabulary logits for the whole micro batch.

transformers' loss materializes `tokens x vocab` logits and upcasts them to fp32 (4096 x 32000 x 4 B = 0.5 GiB
for one 4096-token pack, twice that with its gradient). Here the final hidden states go through the output
layer chunk by chunk: Liger-kernel's fused linear cross-entropy on CUDA when it is installed (one Triton pass
that also produces the input gradient), else a chunked torch version that recomputes each chunk's logits in the
backward pass. Both are exact (fp32 softmax) and average over the tokens whose label is not -100, as
transformers does.
"""

import importlib.util

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
CHUNK_TOKENS = 1024


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                 chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor:
    """Mean next-token loss of `hidden` [B, T, H] through `weight` [V, H] against `labels` [B, T] (shifted here),
    holding the logits of at most `chunk_tokens` tokens at a time."""
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    count = (targets != IGNORE_INDEX).sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if hidden.requires_grad:
            total = total + checkpoint(_chunk_loss_sum, h, weight, t, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(h, weight, t)
    return total / count.clamp(min=1)


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Liger-kernel's fused linear cross-entropy (CUDA), same mean and ignore index as transformers."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1]).contiguous()
    targets = labels[:, 1:].reshape(-1).contiguous()
    return liger_fused_linear_cross_entropy(hidden, weight, targets, ignore_index=IGNORE_INDEX, reduction="mean")


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Liger's fused kernel on CUDA when installed, the chunked torch version otherwise."""
    if hidden.is_cuda and liger_available():
        return fused_linear_cross_entropy(hidden, weight, labels)
    return chunked_linear_cross_entropy(hidden, weight, labels)


def describe_linear_cross_entropy(device_type: str) -> str:
    if device_type == "cuda" and liger_available():
        return "Liger-kernel fused linear cross-entropy"
    return f"chunked linear cross-entropy ({CHUNK_TOKENS} tokens of logits at a time, recomputed in the backward)"
