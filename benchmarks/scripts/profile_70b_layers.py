"""Where a 70B-shaped training step spends its GPU time (issue #8: what limits the capped recipe).

Builds LLaMA-2-70B's layer shape with 4 decoder layers (random NF4 weights, as `nextai bench` does), runs the
`kernels` recipe (packed micro batches, every layer recomputed, Liger kernels, loss without full logits: the
per-layer work of `capped`, which recomputes 79 of 80 layers) through QLoRAModule on packs of 1024-token examples,
and profiles 3 micro steps (forward + backward) with torch.profiler. Writes the kernels grouped by kind, the top
kernels and the host side (CPU ops and Python functions by their own CPU time, kernel launches, where each
synchronization is called from; garbage collections in the timed steps) as markdown to
OUT/profile-70b-layers-PACK-POLICY.md. `keep` turns recomputation off (the fast recipe's layers). `capped` and
`fast` profile the whole 80-layer model of `nextai bench` (/tmp/nextai-bench/70b-nf4) with that recipe: its memory
plan, offloading and allocator cap.

    python benchmarks/scripts/profile_70b_layers.py OUT_DIR [PACK_TOKENS (2048)] [recompute|keep|capped|fast] [bf16|fp8]

The last argument is `model.base_matmul` (the file name then ends in `-fp8`).
"""

import gc
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from nextai.bench.build import build_random_nf4
from nextai.bench.child import make_batch
from nextai.bench.recipes import RECIPES
from nextai.bench.shapes import SHAPES
from nextai.modules.qlora import QLoRAModule

SHAPE = "70b-4-layers"
SHAPES[SHAPE] = {**SHAPES["70b"], "num_hidden_layers": 4}
KINDS = [  # first match wins
    ("NF4 -> e4m3 and row quantization (nextai Triton)", r"^(nf4_to_fp8_kernel|quantize_rows_kernel)$"),
    ("NF4 dequantize (bitsandbytes or nextai Triton)", r"dequant|kDequantize"),
    ("attention (varlen / flash)", r"flash|fmha|attention|varlen"),
    ("GEMM", r"gemm|cutlass|xmma|nvjet|cublas|sm90_|sm100_"),
    ("copies and casts", r"copy|cast|convert|to_copy|memcpy|memset|fill"),
    ("elementwise and reductions (torch)", r"at::native|elementwise|vectorized|reduce|unrolled|index|softmax"),
    ("LoRA A and dropout (nextai Triton)", r"^(project_kernel|backward_kernel)$"),
    ("Liger / Triton kernels", r"triton|liger|_kernel\b"),
]


def kind(name: str) -> str:
    for label, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


class GcClock:
    """Python's garbage collections while it is entered: how many of each generation, and their seconds."""

    def __init__(self) -> None:
        self.counts, self.seconds, self._start = [0, 0, 0], 0.0, None

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.counts[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._start

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)


def timed_steps(step, steps: int = 3) -> tuple[list[float], GcClock]:
    """Each micro step's wall seconds (synchronized, without the profiler), and the garbage collections in them."""
    seconds = []
    with GcClock() as collections:
        for _ in range(steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return seconds, collections


def profile_report(step, title: str, layers: int, steps: int = 3) -> str:
    """Warm up, time, then profile `steps` micro steps; markdown of the GPU time by kind and the top kernels, with
    the share of wall time the GPU was busy (kernel time / wall time; below 100 % is launch gaps or syncs)."""
    for _ in range(3):
        step()
    each, collections = timed_steps(step, steps)
    wall = sum(each) / steps
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], acc_events=True, with_stack=True) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind(e.key)] += e.self_device_time_total
    busy = total / steps / 1e6 / wall
    lines = [f"# {title}", "",
             f"{steps} micro steps (forward + backward); {total / steps / 1e3 / layers:.2f} ms of kernel time per "
             f"layer per micro step (embeddings and loss included); wall {wall * 1e3:.1f} ms per micro step, "
             f"GPU busy {100 * busy:.1f} %; peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB.",
             f"Timed micro steps: {', '.join(f'{1e3 * t:.1f}' for t in each)} ms; Python garbage collections in "
             f"them: {'/'.join(map(str, collections.counts))} (generations 0/1/2), {1e3 * collections.seconds:.1f} ms "
             f"in all; {len(gc.get_objects())} objects tracked.",
             "", "| kind | share | ms per micro step |", "|---|---|---|"]
    for label, micros in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {100 * micros / total:.1f} % | {micros / steps / 1e3:.2f} |")
    blocking = [e for e in prof.key_averages() if e.device_type.name == "CPU"
                and re.search(r"^cuda.*(Synchronize|Memcpy|Malloc|Free|HostAlloc)", e.key)]
    if blocking:  # runtime calls that can stall the CPU (and so leave the GPU idle)
        lines += ["", "| CUDA runtime call | calls per micro step | CPU ms per micro step |", "|---|---|---|"]
        lines += [f"| `{e.key}` | {e.count / steps:.1f} | {e.cpu_time_total / steps / 1e3:.2f} |"
                  for e in sorted(blocking, key=lambda e: -e.cpu_time_total)]
    lines += host_tables(prof, steps)
    lines += ["", "| kernel | kind | share | ms per micro step | calls |", "|---|---|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:30]:
        lines.append(f"| `{e.key[:90]}` | {kind(e.key)} | {100 * e.self_device_time_total / total:.1f} % | "
                     f"{e.self_device_time_total / steps / 1e3:.2f} | {e.count} |")
    return "\n".join(lines) + "\n"


OWN_FRAMES = re.compile(r"(nextai|transformers|liger_kernel|peft|torch/(autograd|utils/checkpoint))/")


def host_tables(prof, steps: int) -> list[str]:
    """The host side: the CPU ops and runtime calls that took the most CPU time themselves (the Python thread's
    and the autograd engine's), and where each synchronization was called from (the first frames of nextai,
    transformers, Liger or peft on its stack)."""
    cpu = [e for e in prof.key_averages() if e.device_type.name == "CPU"]
    launches = [e for e in cpu if re.search(r"LaunchKernel", e.key)]
    lines = ["", f"Host: {sum(e.self_cpu_time_total for e in cpu) / steps / 1e3:.1f} ms of CPU time in profiled ops "
             f"per micro step; {sum(e.count for e in launches) / steps:.0f} kernel launches "
             f"({sum(e.self_cpu_time_total for e in launches) / steps / 1e3:.1f} ms in the launch calls).",
             "", "| CPU op or runtime call | calls per micro step | self CPU ms per micro step |", "|---|---|---|"]
    lines += [f"| `{e.key[:80]}` | {e.count / steps:.1f} | {e.self_cpu_time_total / steps / 1e3:.2f} |"
              for e in sorted(cpu, key=lambda e: -e.self_cpu_time_total)[:25]]
    syncs = [e for e in prof.key_averages(group_by_stack_n=30) if "Synchronize" in e.key]
    if syncs:
        lines += ["", "| synchronization | calls per micro step | called from |", "|---|---|---|"]
        for e in sorted(syncs, key=lambda e: -e.count):
            frames = [f for f in (e.stack or []) if OWN_FRAMES.search(f)][:3]
            lines.append(f"| `{e.key}` | {e.count / steps:.1f} | {'; '.join(frames) or 'the script'} |")
    return lines


def main(out: Path, pack: int, policy: str, base_matmul: str = "bf16") -> None:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    if policy in ("capped", "fast"):  # the whole model, planned and capped as that recipe is
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as `nextai fit` runs
        directory, layers, recipe = build_random_nf4("70b", "/tmp/nextai-bench/70b-nf4"), 80, RECIPES[policy]
        options = recipe.model_kwargs()
    else:
        directory, layers, recipe = build_random_nf4(SHAPE, f"/tmp/nextai-bench/{SHAPE}"), 4, RECIPES["kernels"]
        options = {**recipe.model_kwargs(), "gradient_checkpointing": policy == "recompute"}
    options["base_matmul"] = base_matmul
    module = QLoRAModule(base_model=str(directory), cutoff_len=1024, packing=True, micro_batch_tokens=pack,
                         **options)
    module.build_model(device)
    generator = torch.Generator().manual_seed(0)
    examples = pack // 1024
    batch = make_batch(list(range(examples)), [1024] * examples, True, pack, device, generator)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch).loss
        loss.backward()

    retries = torch.cuda.memory_stats(device).get("num_alloc_retries", 0)
    text = profile_report(step, f"GPU time of a 70B-shaped layer stack, `{recipe.name}` recipe, {pack}-token packs, "
                                f"{'the whole model, its memory plan' if layers == 80 else 'layers ' + policy}, "
                                f"base GEMMs {base_matmul}", layers=layers)
    retries = torch.cuda.memory_stats(device).get("num_alloc_retries", 0) - retries
    text += (f"\nAllocator retries in these {3 + 3 + 3} micro steps: {retries}; peak reserved "
             f"{torch.cuda.max_memory_reserved(device) / 2**30:.2f} GiB.\n")
    if module.memory_plan is not None:
        text += f"Memory plan: {module.memory_plan.summary()}.\n"
    suffix = "-fp8" if base_matmul == "fp8" else ""
    (out / f"profile-70b-layers-{pack}-{policy}{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2048,
         sys.argv[3] if len(sys.argv) > 3 else "recompute", sys.argv[4] if len(sys.argv) > 4 else "bf16")
