"""LoRA dropout's elementwise work per 70B decoder layer at 4096 tokens: the torch mask path against the Triton
kernels (`nextai.modules.lora_dropout`), forward (x * m) and backward (x * m again, grad_x += t * m), for o_proj's
and down_proj's inputs. `--sweep` also times other launch settings of the Triton kernels.

    python benchmarks/scripts/lora_dropout_speed.py OUT_DIR [--sweep]
"""

import json
import sys
import time
from pathlib import Path

import torch

from nextai.modules import lora_dropout
from nextai.modules.lora_dropout import TorchDropout, TritonDropout

SHAPES = {"o_proj input": (4096, 8192), "down_proj input": (4096, 28672)}


def layer_ms(dropout, repeats: int = 20) -> float:
    tensors = {name: (torch.randn(shape, device="cuda", dtype=torch.bfloat16),
                      torch.randn(shape, device="cuda", dtype=torch.bfloat16),
                      torch.randn(shape, device="cuda", dtype=torch.bfloat16)) for name, shape in SHAPES.items()}

    def layer():
        for x, grad_x, t in tensors.values():
            dropout.dropped(x, 0.05, 1234)  # forward
            dropout.dropped(x, 0.05, 1234)  # backward: grad_A
            dropout.add_masked_(grad_x, t, 0.05, 1234)  # backward: grad_x

    layer()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        layer()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main(out: Path, sweep: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"path": "torch", "ms": round(layer_ms(TorchDropout), 3)}]
    settings = [(lora_dropout.QUARTER, lora_dropout.WARPS)]
    if sweep:
        settings += [(q, w) for q in (256, 512, 1024, 2048) for w in (2, 4, 8) if (q, w) != settings[0]]
    for quarter, warps in settings:
        lora_dropout.QUARTER, lora_dropout.WARPS = quarter, warps
        rows.append({"path": "triton", "quarter": quarter, "warps": warps, "ms": round(layer_ms(TritonDropout), 3)})
    for row in rows:
        print(json.dumps(row))
    (out / "lora-dropout-speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--sweep" in sys.argv)
