"""Where a 70B-shaped training step spends its GPU time (issue #8: what limits the capped recipe).

Builds LLaMA-2-70B's layer shape with 4 decoder layers (random NF4 weights, as `nextai bench` does), runs the
`kernels` recipe (packed micro batches, every layer recomputed, Liger kernels, loss without full logits: the
per-layer work of `capped`, which recomputes 79 of 80 layers) through QLoRAModule on packs of 1024-token
examples, and
profiles 3 micro steps (forward + backward) with torch.profiler. Writes the kernels grouped by kind, and the top
kernels, as markdown to OUT/profile-70b-layers-PACK-POLICY.md. `keep` turns recomputation off (the fast recipe's
layers).

    python benchmarks/scripts/profile_70b_layers.py OUT_DIR [PACK_TOKENS (2048)] [recompute|keep]
"""

import re
import sys
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
    ("NF4 dequantize (bitsandbytes)", r"dequant|kDequantize"),
    ("attention (varlen / flash)", r"flash|fmha|attention|varlen"),
    ("GEMM", r"gemm|cutlass|xmma|nvjet|cublas|sm90_|sm100_"),
    ("copies and casts", r"copy|cast|convert|to_copy|memcpy|memset|fill"),
    ("elementwise and reductions (torch)", r"at::native|elementwise|vectorized|reduce|unrolled|index|softmax"),
    ("Liger / Triton kernels", r"triton|liger|_kernel\b"),
]


def kind(name: str) -> str:
    for label, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def main(out: Path, pack: int, policy: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    directory = build_random_nf4(SHAPE, f"/tmp/nextai-bench/{SHAPE}")
    recipe = RECIPES["kernels"]
    module = QLoRAModule(base_model=str(directory), cutoff_len=1024, packing=True, micro_batch_tokens=pack,
                         **{**recipe.model_kwargs(), "gradient_checkpointing": policy == "recompute"})
    module.build_model(device)
    generator = torch.Generator().manual_seed(0)
    examples = pack // 1024
    batch = make_batch(list(range(examples)), [1024] * examples, True, pack, device, generator)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch).loss
        loss.backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind(e.key)] += e.self_device_time_total
    lines = [f"# GPU time of a 70B-shaped layer stack, `kernels` recipe, {pack}-token packs, layers {policy}", "",
             f"4 decoder layers of the 70B shape, {policy}; 3 micro steps (forward + backward); "
             f"{total / 3 / 1e3 / 4:.2f} ms of kernel time per layer per micro step (embeddings and loss included).",
             "", "| kind | share | ms per micro step |", "|---|---|---|"]
    for label, micros in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {100 * micros / total:.1f} % | {micros / 3 / 1e3:.1f} |")
    lines += ["", "| kernel | kind | share | calls |", "|---|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:25]:
        lines.append(f"| `{e.key[:90]}` | {kind(e.key)} | {100 * e.self_device_time_total / total:.1f} % | "
                     f"{e.count} |")
    text = "\n".join(lines) + "\n"
    (out / f"profile-70b-layers-{pack}-{policy}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2048,
         sys.argv[3] if len(sys.argv) > 3 else "recompute")
