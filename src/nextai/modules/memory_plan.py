"""Turn a memory cap into per-layer activation choices: the fastest step that fits.

A layer that keeps its activations costs `keep_bytes` and no recomputation; a recomputed layer keeps only its
input (`input_bytes`) and pays a second forward; an offloaded layer keeps nothing on the GPU and pays the same
second forward (its input copy overlaps compute). Recomputing anything adds one layer's transient
(`recompute_peak_bytes`) to the peak. So: keep as many layers as fit, recompute the rest from inputs held on
the GPU, and offload inputs only when even those do not fit.
"""

from dataclasses import dataclass

import torch

from nextai.errors import NextaiError
from nextai.modules.activations import LayerPolicy, decoder_layers
from nextai.units import gib, parse_memory


@dataclass(frozen=True)
class LayerCost:
    keep_bytes: int  # activations one layer holds for its backward when nothing is recomputed
    input_bytes: int  # its input hidden states (what a recomputed layer holds)
    recompute_peak_bytes: int  # extra peak while a recomputed layer re-runs its forward and its backward
    forward_transient_bytes: int = 0  # extra peak inside one layer's forward (dequantized weights, workspaces)


@dataclass(frozen=True)
class MemoryPlan:
    policies: list[LayerPolicy]
    budget_bytes: int
    static_bytes: int
    predicted_peak_bytes: int
    cost: LayerCost

    def summary(self) -> str:
        counts = {p: self.policies.count(p) for p in ("keep", "recompute", "offload") if self.policies.count(p)}
        layers = ", ".join(f"{n} {p}" for p, n in counts.items())
        return (f"{layers} of {len(self.policies)} layers; predicted peak {gib(self.predicted_peak_bytes):.1f} GiB "
                f"of a {gib(self.budget_bytes):.1f} GiB budget (static {gib(self.static_bytes):.1f} GiB, "
                f"{gib(self.cost.keep_bytes):.2f} GiB per kept layer, {gib(self.cost.input_bytes):.3f} GiB per "
                f"layer input)")


def peak_bytes(keep: int, recompute: int, offload: int, static: int, cost: LayerCost) -> int:
    transient = max(cost.forward_transient_bytes, cost.recompute_peak_bytes if recompute or offload else 0)
    return static + keep * cost.keep_bytes + recompute * cost.input_bytes + transient


def plan_layers(layers: int, budget_bytes: int, static_bytes: int, cost: LayerCost) -> MemoryPlan:
    """Most kept layers first, then the fewest offloaded; kept layers are the last ones (their backward comes
    first, while the inputs of offloaded earlier layers are copied back)."""
    for keep in range(layers, -1, -1):
        rest = layers - keep
        for offload in range(0, rest + 1):
            recompute = rest - offload
            peak = peak_bytes(keep, recompute, offload, static_bytes, cost)
            if peak <= budget_bytes:
                policies: list[LayerPolicy] = ["offload"] * offload + ["recompute"] * recompute + ["keep"] * keep
                return MemoryPlan(policies, budget_bytes, static_bytes, peak, cost)
    need = peak_bytes(0, 0, layers, static_bytes, cost)
    raise NextaiError(f"model.memory_budget {gib(budget_bytes):.1f} GiB is below the smallest possible step "
                      f"({gib(need):.1f} GiB: weights and fixed state {gib(static_bytes):.1f} GiB plus one layer's "
                      f"recomputation); raise it or shorten data.pack_length / data.cutoff_len")


def card_bytes(device: torch.device) -> int:
    """What this process can still hold on the card: free memory plus what it already reserved, less 512 MiB."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - (512 << 20)


def budget_bytes(memory_budget: str, device: torch.device) -> int:
    if memory_budget == "card":
        return card_bytes(device)
    return parse_memory(memory_budget, "model.memory_budget")


def cap_allocator(budget: int, device: torch.device) -> float:
    """Hold torch's caching allocator to `budget` bytes of reserved memory on `device` (the card then behaves as
    one of that size: past the cap the allocator frees its cached blocks and retries before it fails). Without
    it, a plan that fits in allocated memory reserved up to 1.4 GiB more on an H200 with 141 GB to spare.
    Returns the fraction of the card set."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    fraction = min(1.0, budget / torch.cuda.get_device_properties(index).total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def measure_layer(model, tokens: int, packed: bool) -> LayerCost:
    """Run one decoder layer forward and backward on `tokens` random hidden states and read the allocator."""
    layer = decoder_layers(model)[0]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    device = next(p for p in layer.parameters()).device
    hidden_size = base.config.hidden_size
    was_checkpointing = layer.gradient_checkpointing
    layer.gradient_checkpointing = False
    hidden = torch.randn(1, tokens, hidden_size, device=device, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(tokens, device=device).unsqueeze(0)
    extra = {}
    if packed:
        extra = {"cu_seq_lens_q": torch.tensor([0, tokens], device=device, dtype=torch.int32),
                 "cu_seq_lens_k": torch.tensor([0, tokens], device=device, dtype=torch.int32),
                 "max_length_q": tokens, "max_length_k": tokens}
    try:
        torch.cuda.synchronize(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            position_embeddings = decoder.rotary_emb(hidden, positions)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            out = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=position_embeddings,
                        use_cache=False, **extra)
            out = out[0] if isinstance(out, tuple) else out
        after_forward = torch.cuda.memory_allocated(device)
        forward_transient = torch.cuda.max_memory_allocated(device) - after_forward
        torch.cuda.reset_peak_memory_stats(device)
        out.backward(torch.randn_like(out))
        backward_peak = torch.cuda.max_memory_allocated(device) - after_forward
    finally:
        layer.gradient_checkpointing = was_checkpointing
        model.zero_grad(set_to_none=True)
    input_bytes = hidden.numel() * hidden.element_size()
    keep = max(after_forward - before, input_bytes)
    return LayerCost(keep_bytes=keep, input_bytes=input_bytes, recompute_peak_bytes=keep + max(backward_peak, 0),
                     forward_transient_bytes=max(forward_transient, 0))
