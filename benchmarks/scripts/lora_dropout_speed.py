"""LoRA's input side per 70B decoder layer at 4096 tokens (o_proj's and down_proj's inputs, rank 4): the forward
(x * m) A^T and the backward (grad_A, grad_x += (grad_xa A) * m), through the torch path (a drawn mask and cuBLAS)
and the fused Triton kernels (`nextai.modules.lora_dropout`), with dropout 0.05 and without. `--sweep` also times
other launch settings of the Triton kernels (the mask does not depend on them).

    python benchmarks/scripts/lora_dropout_speed.py OUT_DIR [--sweep]
"""

import itertools
import json
import sys
import time
from pathlib import Path

import torch

from nextai.modules import lora_dropout
from nextai.modules.lora_dropout import TorchDropout, TritonDropout

SHAPES = {"o_proj input": (4096, 8192), "down_proj input": (4096, 28672)}
RANK = 4


def layer_ms(dropout, p: float, repeats: int = 20) -> float:
    tensors = [(torch.randn(shape, device="cuda", dtype=torch.bfloat16),
                torch.randn(RANK, shape[1], device="cuda", dtype=torch.bfloat16),
                torch.randn(shape[0], RANK, device="cuda", dtype=torch.bfloat16),
                torch.randn(shape, device="cuda", dtype=torch.bfloat16)) for shape in SHAPES.values()]

    def layer():
        for x, lora_A, grad_xa, grad_x in tensors:
            dropout.project(x, lora_A, p, 1234)
            dropout.backward_(x, lora_A, grad_xa, grad_x, p, 1234)

    layer()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        layer()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main(out: Path, sweep: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"path": "torch (mask + cuBLAS)", "p": p, "ms": round(layer_ms(TorchDropout, p), 3)} for p in (0.05, 0.0)]
    default = (lora_dropout.PROJECT_TILE, lora_dropout.BACKWARD_TILE, lora_dropout.WARPS, lora_dropout.STAGES)
    settings = [default]
    if sweep:
        settings += [(tile, tile, w, st) for tile, w, st in
                     itertools.product(((32, 64), (64, 64), (128, 64), (64, 128)), (2, 4, 8), (2, 3))
                     if (tile, tile, w, st) != default]
    for setting in settings:
        lora_dropout.PROJECT_TILE, lora_dropout.BACKWARD_TILE, lora_dropout.WARPS, lora_dropout.STAGES = setting
        try:
            for p in (0.05, 0.0) if setting == default else (0.05,):
                rows.append({"path": "triton (fused)", "p": p, "project_tile": setting[0],
                             "backward_tile": setting[1], "warps": setting[2], "stages": setting[3],
                             "ms": round(layer_ms(TritonDropout, p), 3)})
        except Exception as err:  # a setting Triton cannot compile (shared memory): recorded, not fatal
            rows.append({"path": "triton (fused)", "setting": setting, "error": f"{type(err).__name__}: {err}"[:200]})
        print(json.dumps(rows[-1]), flush=True)
    lora_dropout.PROJECT_TILE, lora_dropout.BACKWARD_TILE, lora_dropout.WARPS, lora_dropout.STAGES = default
    for row in rows[:2]:
        print(json.dumps(row))
    (out / "lora-dropout-speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--sweep" in sys.argv)
