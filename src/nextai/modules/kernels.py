"""Faster kernels without writing any: Liger-kernel's fused RMSNorm, SwiGLU and RoPE for LLaMA (CUDA, Triton), and
torch.compile on each decoder layer (torch's own fusion of the elementwise work around the matmuls)."""

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


def compile_decoder_layers(layers: list) -> str:
    """`torch.compile` each decoder layer in place (`nn.Module.compile`): the layer's forward, and its recomputation
    under activation checkpointing, run as compiled graphs; whatever Dynamo cannot trace runs eagerly (a graph
    break, not an error). The layers share their compiled graph (their parameters are graph inputs), so a model of
    80 layers compiles about once per input shape; the first step of each new shape pays for it. On the tiny 4-bit
    model (CPU, bitsandbytes 0.50, peft LoRA) both layers ran as one shared graph with no graph break.

    Random ops (LoRA dropout) inside the compiled graphs draw from torch's own generator (`fallback_random`), not
    Inductor's: the same masks as eager.

    Since transformers 5.25 (which brings the `kernels` package) each attention forward sets and resets a context
    variable; under recomputation Dynamo refuses that side effect inside the checkpoint and compiled nothing. The
    pair is a no-op once the forward returns, so replaying it in the backward is not needed
    (`skip_fwd_side_effects_in_bwd_under_checkpoint`). `check_layers_compiled` refuses a run that compiled nothing.
    """
    import torch._dynamo.config
    import torch._inductor.config

    torch._inductor.config.fallback_random = True
    torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    for layer in layers:
        layer.compile()
    return f"torch.compile on {len(layers)} decoder layers (compiled at the first step of each shape)"


def check_layers_compiled() -> None:
    """After the first step with `compile_layers`: Dynamo produced at least one graph, else one line with why
    (a run that asked for compiled layers must not silently run them eagerly)."""
    from torch._dynamo.utils import counters

    if counters["stats"]["unique_graphs"] > 0:
        return
    reasons = "; ".join(reason.splitlines()[0] for reason in counters["graph_break"]) or "no graph break recorded"
    raise NextaiError(f"model.compile_layers: torch.compile compiled no graph for the decoder layers ({reasons}); "
                      "set model.compile_layers false")
