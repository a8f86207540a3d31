"""NF4 dequantization speed on the GPU: bitsandbytes' kernels vs nextai's Triton kernel, per LLaMA-2-70B weight
shape (double quantization, bf16 out). Writes OUT/dequant-speed.json and .md.

    python benchmarks/scripts/dequant_speed.py OUT
"""

import json
import statistics
import sys
from pathlib import Path

import bitsandbytes.functional as F
import torch

from nextai.modules.nf4_dequant import bitsandbytes_dequantize, triton_dequantize_nf4

SHAPES = {"q_proj, o_proj": (8192, 8192), "k_proj, v_proj": (1024, 8192), "gate_proj, up_proj": (28672, 8192),
          "down_proj": (8192, 28672)}


def median_ms(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for names, shape in SHAPES.items():
        weight = torch.randn(shape, device="cuda", dtype=torch.bfloat16) * 0.02
        packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
        del weight
        moved = packed.numel() + state.absmax.numel() + 2 * packed.numel() * 2  # bytes read + bf16 written
        for kernel, fn in (("bitsandbytes", bitsandbytes_dequantize), ("triton", triton_dequantize_nf4)):
            ms = median_ms(lambda: fn(packed, state, torch.bfloat16))
            rows.append({"weights": names, "shape": list(shape), "kernel": kernel, "ms": round(ms, 4),
                         "tb_per_s": round(moved / ms / 1e9, 2)})
        same = torch.equal(triton_dequantize_nf4(packed, state, torch.bfloat16),
                           bitsandbytes_dequantize(packed, state, torch.bfloat16))
        rows[-1]["bit_equal_to_bitsandbytes"] = rows[-2]["bit_equal_to_bitsandbytes"] = same
    sweep = []
    if "--sweep" in sys.argv:  # Triton launch settings on the two large shapes
        for names in ("gate_proj, up_proj", "down_proj"):
            weight = torch.randn(SHAPES[names], device="cuda", dtype=torch.bfloat16) * 0.02
            packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
            del weight
            reference = bitsandbytes_dequantize(packed, state, torch.bfloat16)
            moved = packed.numel() + state.absmax.numel() + 2 * packed.numel() * 2
            for blocks in (16, 32, 64, 128, 256):  # the committed sweep also tried a select tree for the NF4
                for warps in (2, 4, 8, 16):         # table (bitsandbytes' Triton helper): slower, since removed
                    fn = lambda: triton_dequantize_nf4(packed, state, torch.bfloat16, blocks=blocks, warps=warps)  # noqa
                    ms = median_ms(fn, 20)
                    sweep.append({"weights": names, "blocks": blocks, "warps": warps, "ms": round(ms, 4),
                                  "tb_per_s": round(moved / ms / 1e9, 2), "bit_equal": torch.equal(fn(), reference)})
        best = sorted(sweep, key=lambda r: r["ms"])
        print("fastest Triton settings:", json.dumps(best[:6]))
    per_layer = {k: sum(r["ms"] * (2 if r["weights"] != "down_proj" else 1) for r in rows if r["kernel"] == k)
                 for k in ("bitsandbytes", "triton")}
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows, "sweep": sweep,
              "ms_per_70b_layer": {k: round(v, 3) for k, v in per_layer.items()}}
    (out / "dequant-speed.json").write_text(json.dumps(result, indent=1))
    lines = [f"# NF4 dequantization, 70B weight shapes ({result['gpu']}, torch {result['torch']})", "",
             "| weights | shape | kernel | ms | TB/s moved | bit-equal |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['weights']} | {r['shape'][0]} x {r['shape'][1]} | {r['kernel']} | {r['ms']} | {r['tb_per_s']} | "
              f"{r['bit_equal_to_bitsandbytes']} |" for r in rows]
    lines += ["", "One 70B decoder layer's seven weights, once: " + ", ".join(
        f"{k} {v:.3f} ms" for k, v in per_layer.items())]
    (out / "dequant-speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
