"""What cutting weights and masks into pieces costs in time and saves in memory (issue #8).

4 decoder layers of the LLaMA-2-70B shape (random NF4), the capped recipe's layer settings with the lean LoRA layers
and the Triton kernel, one 4096-token pack, every layer recomputed; step time (median of 5, CUDA synchronized) and
peak allocated memory with weights whole or in `CHUNK_BYTES` pieces, masks whole or in `MASK_CHUNK_BYTES` rows.

    python benchmarks/scripts/chunk_cost_70b_layers.py
"""

import statistics
import time

import torch

from nextai.bench.build import build_random_nf4
from nextai.bench.child import make_batch
from nextai.bench.recipes import RECIPES
from nextai.bench.shapes import SHAPES
from nextai.modules import lean_lora
from nextai.modules.qlora import QLoRAModule

SHAPE = "70b-4-layers"
SHAPES[SHAPE] = {**SHAPES["70b"], "num_hidden_layers": 4}


def main() -> None:
    device = torch.device("cuda")
    directory = build_random_nf4(SHAPE, f"/tmp/nextai-bench/{SHAPE}")
    module = QLoRAModule(base_model=str(directory), cutoff_len=1024, packing=True, micro_batch_tokens=4096,
                         **{**RECIPES["kernels"].model_kwargs()})
    module.build_model(device)
    batch = make_batch(list(range(4)), [1024] * 4, True, 4096, device, torch.Generator().manual_seed(0))

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch).loss
        loss.backward()
        module.model.zero_grad(set_to_none=True)

    whole, masks = lean_lora.CHUNK_BYTES, lean_lora.MASK_CHUNK_BYTES
    for label, chunk, mask_chunk, inner in [
            ("whole weights, whole masks", 1 << 40, 1 << 40, True),
            ("weight pieces along the output", whole, 1 << 40, False),
            ("weight pieces along the inner dimension", whole, 1 << 40, True),
            ("mask chunks", 1 << 40, masks, True),
            ("weight pieces along the inner dimension and mask chunks", whole, masks, True),
            ("whole weights, whole masks (again)", 1 << 40, 1 << 40, True)]:
        lean_lora.CHUNK_BYTES, lean_lora.MASK_CHUNK_BYTES, lean_lora.SPLIT_INNER = chunk, mask_chunk, inner
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        print(f"{label}: {statistics.median(times) * 1e3 / 4:.2f} ms a layer, peak "
              f"{(torch.cuda.max_memory_allocated() - before) / 2**20:,.0f} MiB above the weights", flush=True)


if __name__ == "__main__":
    main()
