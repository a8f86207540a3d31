"""What is alive at the peak of a 70B-shaped training step (issue #8: what keeps the capped recipe over its cap).

Builds 4 decoder layers of the LLaMA-2-70B shape (random NF4 weights, as `nextai bench` does), runs the capped
recipe's layer settings (packed, every layer recomputed, Liger kernels, loss without full logits, lean LoRA, the
chosen NF4 kernel) on one pack of 4 x 1024 tokens, records torch's allocator history for one step and lists the
allocations alive at the step's allocated peak, by the Python line that made them. Writes
OUT/memory-peak-70b-layers-KERNEL.md.

    python benchmarks/scripts/memory_peak_70b_layers.py OUT_DIR [triton|bitsandbytes]
"""

import sys
from collections import defaultdict
from pathlib import Path

import torch

from nextai.bench.build import build_random_nf4
from nextai.bench.child import make_batch
from nextai.bench.recipes import RECIPES
from nextai.bench.shapes import SHAPES
from nextai.modules.qlora import QLoRAModule

SHAPE = "70b-4-layers"
SHAPES[SHAPE] = {**SHAPES["70b"], "num_hidden_layers": 4}
MIB = 1 << 20


def where(frames: list[dict]) -> str:
    """The innermost frames outside torch's own Python files: the line that asked for the memory."""
    ours = [f for f in frames if "/torch/" not in f["filename"] or "checkpoint" in f["filename"]]
    return " < ".join(f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in ours[:3]) or "(torch)"


def live_at_peak(trace: list[dict]) -> tuple[int, dict[int, dict]]:
    live, total, peak, at_peak = {}, 0, 0, {}
    for event in trace:
        if event["action"] == "alloc":
            live[event["addr"]] = event
            total += event["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif event["action"] == "free_completed" and event["addr"] in live:
            total -= live.pop(event["addr"])["size"]
    return peak, at_peak


def main(out: Path, kernel: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    directory = build_random_nf4(SHAPE, f"/tmp/nextai-bench/{SHAPE}")
    recipe = RECIPES["kernels"]
    module = QLoRAModule(base_model=str(directory), cutoff_len=1024, packing=True, micro_batch_tokens=4096,
                         **{**recipe.model_kwargs(), "lean_lora": True, "dequant_kernel": kernel})
    module.build_model(device)
    batch = make_batch(list(range(4)), [1024] * 4, True, 4096, device, torch.Generator().manual_seed(0))

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch).loss
        loss.backward()
        module.model.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    torch.cuda.memory._record_memory_history(max_entries=200_000, stacks="python")
    # Recording the history made the recomputation's early stop (an exception thrown through the autograd
    # functions) fail inside torch 2.11 with a SystemError; recompute the whole layer instead (same memory).
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        step()
    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak_allocated = torch.cuda.max_memory_allocated(device)
    peak, at_peak = live_at_peak(snapshot["device_traces"][device.index or 0])
    groups: dict[str, list[int]] = defaultdict(list)
    for event in at_peak.values():
        groups[where(event.get("frames", []))].append(event["size"])
    lines = [f"# Alive at the allocated peak of one step: 4 decoder layers of the 70B shape, 4096-token pack, "
             f"recomputed, lean LoRA, {kernel} NF4 dequantization", "",
             f"Allocated before the step {before / MIB:,.0f} MiB; step peak {(peak_allocated - before) / MIB:,.0f} MiB "
             f"above it (allocator); {peak / MIB:,.0f} MiB made during the step and alive at its peak (history):", "",
             "| MiB | tensors | made at |", "|---|---|---|"]
    for place, sizes in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:30]:
        lines.append(f"| {sum(sizes) / MIB:,.0f} | {len(sizes)} | `{place}` |")
    text = "\n".join(lines) + "\n"
    (out / f"memory-peak-70b-layers-{kernel}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "triton")
