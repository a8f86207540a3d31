"""Fused kernels from a kept library: Liger-kernel's RMSNorm, SwiGLU and RoPE for LLaMA (CUDA, Triton)."""

import importlib.util

from nextai.errors import NextaiError


def apply_liger_kernels(model, device_type: str) -> str:
    """Swap the model's RMSNorm, SwiGLU MLP and rotary embedding for Liger's fused Triton kernels, in place.

    The LoRA-wrapped projections stay as they are (Liger's SwiGLU calls the module's gate/up/down layers and fuses
    only `silu(gate) * up`); the loss is handled by `nextai.modules.loss`.
    """
    if device_type != "cuda":
        raise NextaiError("model.liger_kernels needs a CUDA GPU (Liger's kernels are Triton)")
    if importlib.util.find_spec("liger_kernel") is None:
        raise NextaiError("model.liger_kernels needs the liger-kernel package (pip install liger-kernel)")
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False, model=model)
    return "Liger-kernel RMSNorm, SwiGLU and RoPE"
