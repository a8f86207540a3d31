"""FP8 base GEMMs on the 70B shape (issue #22), on the GPU: numerics first, then speed, in one process.

1. Each projection shape of a LLaMA-2-70B decoder layer at 4096 tokens (q/o 8192 -> 8192, k/v 8192 -> 1024,
   gate/up 8192 -> 28672, down 28672 -> 8192), random NF4 weights (N(0, 0.02), double quantization) and inputs
   with outlier channels: the output and the input gradient of the bf16 path and of the FP8 path (with and without
   fast accumulation), relative error against an fp64 product of the same NF4 weight; then the time of each piece
   (bf16 dequantization + GEMM as the lean layers run it; FP8: row quantization, NF4 -> e4m3, `torch._scaled_mm`).
2. Four 70B decoder layers through QLoRAModule with the `kernels` recipe (packed 4096-token micro batches,
   Liger, lean LoRA r 4 on o_proj + down_proj, dropout 0.05, Triton dequantization), layers recomputed and kept:
   the bf16 and FP8 base GEMMs swapped on the same loaded model (`make_lean(..., base_matmul=...)`); milliseconds
   per micro step (forward + backward), the loss and LoRA gradients of one batch in both, and a profile of each
   (`profile_70b_layers.profile_report`).

    python benchmarks/scripts/fp8_layer_check.py OUT_DIR [--sweep] [--skip-projections] [--skip-layers]

`--sweep` first times the NF4 -> e4m3 kernel's launch settings and keeps the fastest for the rest.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

M = 4096
SHAPES = {"q_proj, o_proj": (8192, 8192), "k_proj, v_proj": (1024, 8192), "gate_proj, up_proj": (28672, 8192),
          "down_proj": (8192, 28672)}


def bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def relative(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.double() - exact).norm() / exact.norm()).item()


def projection_rows() -> list[dict]:
    import bitsandbytes.functional as F

    from nextai.modules.fp8 import Fp8Matmul, nf4_to_fp8, nf4_weight_fp32, quantize_rows
    from nextai.modules.nf4_dequant import DequantWorkspace, dequantizer

    rows = []
    generator = torch.Generator(device="cuda").manual_seed(0)
    for names, (n, k) in SHAPES.items():
        weight = (torch.randn(n, k, device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
        packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
        del weight
        x = torch.randn(M, k, device="cuda", generator=generator)
        x[:, :8] *= 20  # outlier channels, as LLaMA's activations have
        x = x.to(torch.bfloat16)
        grad = torch.randn(M, n, device="cuda", generator=generator).to(torch.bfloat16)
        dequantize = dequantizer("triton", DequantWorkspace())
        exact_w = nf4_weight_fp32(packed, state).double()  # the NF4 values, unrounded
        exact_out = x.double() @ exact_w.t()
        exact_grad = grad.double() @ exact_w
        del exact_w
        row = {"projections": names, "N": n, "K": k, "M": M}
        w16 = dequantize(packed, state, torch.bfloat16)
        row["error_out_bf16"] = relative(x @ w16.t(), exact_out)
        row["error_grad_bf16"] = relative(grad @ w16, exact_grad)
        for fast in (False, True):
            matmul = Fp8Matmul("triton", fast_accum=fast)
            tag = "fp8_fast" if fast else "fp8"
            row[f"error_out_{tag}"] = relative(matmul.matmul(x, packed, state), exact_out)
            row[f"error_grad_{tag}"] = relative(matmul.input_grad(grad, packed, state), exact_grad)
        del exact_out, exact_grad
        # times (ms, medians): bf16 as the lean layers run it, then FP8's pieces and whole
        row["ms_bf16_gemm_fwd"] = bench(lambda: x @ w16.t())
        row["ms_bf16_gemm_bwd"] = bench(lambda: grad @ w16)
        row["ms_bf16_dequant"] = bench(lambda: dequantize(packed, state, torch.bfloat16))
        row["ms_bf16_path_fwd"] = bench(lambda: x @ dequantize(packed, state, torch.bfloat16).t())
        row["ms_bf16_path_bwd"] = bench(lambda: grad @ dequantize(packed, state, torch.bfloat16))
        del w16
        for fast in (False, True):
            matmul = Fp8Matmul("triton", fast_accum=fast)
            tag = "fp8_fast" if fast else "fp8"
            q, sx = quantize_rows(x)
            g8, sg = quantize_rows(grad)
            scales = matmul.scales(packed, state)
            w8 = nf4_to_fp8(packed, state, scales)
            w8t = nf4_to_fp8(packed, state, scales, transposed=True)
            row[f"ms_{tag}_gemm_fwd"] = bench(lambda: torch._scaled_mm(
                q, w8.t(), scale_a=sx, scale_b=scales["row_scale"][None, :], out_dtype=torch.bfloat16,
                use_fast_accum=fast))
            row[f"ms_{tag}_gemm_bwd"] = bench(lambda: torch._scaled_mm(
                g8, w8t.t(), scale_a=sg, scale_b=scales["col_scale"][None, :], out_dtype=torch.bfloat16,
                use_fast_accum=fast))

            def forward():
                matmul._last.put(None, None)  # not shared: quantized every call
                return matmul.matmul(x, packed, state)

            row[f"ms_{tag}_path_fwd"] = bench(forward)
            row[f"ms_{tag}_path_fwd_shared_input"] = bench(lambda: matmul.matmul(x, packed, state))
            row[f"ms_{tag}_path_bwd"] = bench(lambda: matmul.input_grad(grad, packed, state))
            if not fast:
                row["ms_quantize_x"] = bench(lambda: quantize_rows(x))
                row["ms_quantize_grad"] = bench(lambda: quantize_rows(grad))
                row["ms_nf4_to_fp8"] = bench(lambda: nf4_to_fp8(packed, state, scales, out=w8))
                row["ms_nf4_to_fp8_transposed"] = bench(lambda: nf4_to_fp8(packed, state, scales, True, out=w8t))
            del q, g8, w8, w8t
        print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        rows.append(row)
        del x, grad, packed, state
        torch.cuda.empty_cache()
    return rows


def layer_rows(out: Path) -> list[dict]:
    from profile_70b_layers import SHAPE, profile_report  # its kinds name the FP8 kernels

    from nextai.bench.build import build_random_nf4
    from nextai.bench.child import make_batch
    from nextai.bench.recipes import RECIPES
    from nextai.modules.lean_lora import make_lean, undo_lean
    from nextai.modules.qlora import QLoRAModule

    directory = build_random_nf4(SHAPE, f"/tmp/nextai-bench/{SHAPE}")
    rows = []
    for policy in ("recompute", "keep"):
        options = {**RECIPES["kernels"].model_kwargs(), "gradient_checkpointing": policy == "recompute"}
        module = QLoRAModule(base_model=str(directory), cutoff_len=1024, packing=True, micro_batch_tokens=4096,
                             **options)
        module.build_model(torch.device("cuda"))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # LoRA B starts at zero in peft: give both factors values so LoRA's gradients differ
            for name, p in sorted(module.model.named_parameters()):
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.01)
        batch = make_batch(list(range(4)), [1024] * 4, True, 4096, torch.device("cuda"), generator)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = module(batch).loss
            loss.backward()
            return loss

        results = {}
        for mode in ("bf16", "fp8", "bf16 again"):
            undo_lean(module.model)
            line = make_lean(module.model, True, "triton", base_matmul=mode.split()[0])
            module.model.zero_grad(set_to_none=True)
            torch.manual_seed(0)  # the same dropout masks
            loss = step().item()
            grads = {n: p.grad.float().clone() for n, p in module.model.named_parameters() if p.grad is not None}
            for _ in range(2):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(8):
                start = time.perf_counter()
                step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            times.sort()
            torch.cuda.reset_peak_memory_stats()
            step()
            peak = torch.cuda.max_memory_allocated() / 2**30
            results[mode] = {"loss": loss, "grads": grads, "ms": 1e3 * times[len(times) // 2], "peak_gib": peak,
                             "ms_min": 1e3 * times[0], "line": line}
            if policy == "recompute" and mode != "bf16 again":
                text = profile_report(step, f"GPU time of 4 70B-shaped layers, `kernels` recipe, 4096-token packs, "
                                            f"layers {policy}, base GEMMs {mode}", layers=4)
                (out / f"fp8-profile-70b-layers-4096-{policy}-{mode}.md").write_text(text)
            module.model.zero_grad(set_to_none=True)
        for mode in ("bf16", "fp8", "bf16 again"):
            grad_errors = [((results[mode]["grads"][n] - g).norm() / g.norm()).item()
                           for n, g in results["bf16"]["grads"].items()]
            rows.append({"policy": policy, "base_matmul": mode, "ms_per_micro_step": round(results[mode]["ms"], 2),
                         "ms_min": round(results[mode]["ms_min"], 2),
                         "ms_per_layer": round(results[mode]["ms"] / 4, 2),
                         "peak_allocated_gib": round(results[mode]["peak_gib"], 2), "loss": results[mode]["loss"],
                         "lora_grad_rel_diff_vs_bf16_max": max(grad_errors),
                         "lora_grad_rel_diff_vs_bf16_median": sorted(grad_errors)[len(grad_errors) // 2],
                         "layers_line": results[mode]["line"]})
            print(json.dumps(rows[-1]), flush=True)
        (out / "fp8-layer-rows.json").write_text(json.dumps(rows, indent=1))  # kept if a later part times out
        del module, results
        torch.cuda.empty_cache()
    return rows


def weight_kernel_sweep() -> list[dict]:
    """NF4 -> e4m3 launch settings on the gate/up weight (28,672 x 8,192), both layouts; the fastest (sum of the
    two) becomes `fp8.WEIGHT_ROWS` / `fp8.WEIGHT_WARPS` for the rest of the process (the values do not depend on
    them: each program owns whole blocks)."""
    import bitsandbytes.functional as F

    from nextai.modules import fp8

    weight = (torch.randn(28672, 8192, device="cuda") * 0.02).to(torch.bfloat16)
    packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    del weight
    scales = fp8.Fp8Matmul("triton").scales(packed, state)
    out = torch.empty(28672, 8192, dtype=fp8.E4M3, device="cuda")
    out_t = torch.empty(8192, 28672, dtype=fp8.E4M3, device="cuda")
    reference = fp8.nf4_to_fp8(packed, state, scales, out=torch.empty_like(out))
    rows = []
    for block_rows in (32, 64, 128):
        for warps in (2, 4, 8):
            fp8.WEIGHT_ROWS, fp8.WEIGHT_WARPS = block_rows, warps
            ms = bench(lambda: fp8.nf4_to_fp8(packed, state, scales, out=out))
            ms_t = bench(lambda: fp8.nf4_to_fp8(packed, state, scales, True, out=out_t))
            assert torch.equal(out.view(torch.uint8), reference.view(torch.uint8))
            rows.append({"rows": block_rows, "warps": warps, "ms": round(ms, 4), "ms_transposed": round(ms_t, 4)})
            print(json.dumps(rows[-1]), flush=True)
    best = min(rows, key=lambda r: r["ms"] + r["ms_transposed"])
    fp8.WEIGHT_ROWS, fp8.WEIGHT_WARPS = best["rows"], best["warps"]
    return rows


def markdown(report: dict) -> str:
    lines = [f"# FP8 base GEMMs at the 70B shape ({report['device']}, torch {report['torch']})", "",
             f"FP8 path: fast accumulation {report.get('fast_accum')}, NF4 -> e4m3 kernel "
             f"{report.get('weight_kernel')}.", "",
             "## Numerics: relative error against an fp64 product of the same NF4 weight (4096 tokens)", "",
             "| projections | N x K | out bf16 | out fp8 | out fp8 fast-accum | grad bf16 | grad fp8 | "
             "grad fp8 fast-accum |", "|---|---|---|---|---|---|---|---|"]
    for r in report["projections"]:
        lines.append(f"| {r['projections']} | {r['N']} x {r['K']} | {r['error_out_bf16']:.2e} | "
                     f"{r['error_out_fp8']:.2e} | {r['error_out_fp8_fast']:.2e} | {r['error_grad_bf16']:.2e} | "
                     f"{r['error_grad_fp8']:.2e} | {r['error_grad_fp8_fast']:.2e} |")
    lines += ["", "## Speed per projection (ms, median of do_bench)", "",
              "| projections | bf16 GEMM fwd / bwd | bf16 dequant | bf16 path fwd / bwd | fp8 GEMM fwd / bwd | "
              "fp8 fast GEMM fwd / bwd | quantize x / grad | NF4->e4m3 / transposed | fp8 path fwd (shared x) / "
              "bwd | fp8 fast path fwd (shared x) / bwd |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["projections"]:
        lines.append(
            f"| {r['projections']} | {r['ms_bf16_gemm_fwd']:.3f} / {r['ms_bf16_gemm_bwd']:.3f} | "
            f"{r['ms_bf16_dequant']:.3f} | {r['ms_bf16_path_fwd']:.3f} / {r['ms_bf16_path_bwd']:.3f} | "
            f"{r['ms_fp8_gemm_fwd']:.3f} / {r['ms_fp8_gemm_bwd']:.3f} | {r['ms_fp8_fast_gemm_fwd']:.3f} / "
            f"{r['ms_fp8_fast_gemm_bwd']:.3f} | {r['ms_quantize_x']:.3f} / {r['ms_quantize_grad']:.3f} | "
            f"{r['ms_nf4_to_fp8']:.3f} / {r['ms_nf4_to_fp8_transposed']:.3f} | {r['ms_fp8_path_fwd']:.3f} "
            f"({r['ms_fp8_path_fwd_shared_input']:.3f}) / {r['ms_fp8_path_bwd']:.3f} | "
            f"{r['ms_fp8_fast_path_fwd']:.3f} ({r['ms_fp8_fast_path_fwd_shared_input']:.3f}) / "
            f"{r['ms_fp8_fast_path_bwd']:.3f} |")
    if report.get("weight_kernel_sweep"):
        lines += ["", "## NF4 -> e4m3 launch settings (28,672 x 8,192, ms)", "", "| rows | warps | W | W^T |",
                  "|---|---|---|---|"]
        lines += [f"| {r['rows']} | {r['warps']} | {r['ms']} | {r['ms_transposed']} |"
                  for r in report["weight_kernel_sweep"]]
    if report.get("layers"):
        lines += ["", "## Four 70B decoder layers, `kernels` recipe, one 4096-token pack (forward + backward)", "",
                  "| layers | base GEMMs | ms per micro step (median of 8; min) | ms per layer | peak allocated GiB | "
                  "loss | LoRA grad rel. diff vs bf16 (median / max) |", "|---|---|---|---|---|---|---|"]
        for r in report["layers"]:
            lines.append(f"| {r['policy']} | {r['base_matmul']} | {r['ms_per_micro_step']} ({r['ms_min']}) | "
                         f"{r['ms_per_layer']} | {r['peak_allocated_gib']} | {r['loss']:.5f} | "
                         f"{r['lora_grad_rel_diff_vs_bf16_median']:.2e} / {r['lora_grad_rel_diff_vs_bf16_max']:.2e} |")
    return "\n".join(lines) + "\n"


def main(out: Path, options: list[str]) -> None:
    from nextai.modules import fp8

    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "fast_accum": fp8.FAST_ACCUM,
              "projections": []}
    if "--sweep" in options:
        report["weight_kernel_sweep"] = weight_kernel_sweep()
    report["weight_kernel"] = {"rows": fp8.WEIGHT_ROWS, "warps": fp8.WEIGHT_WARPS}
    if "--skip-projections" not in options:
        report["projections"] = projection_rows()
    (out / "fp8-layer-check.json").write_text(json.dumps(report, indent=1))
    if "--skip-layers" not in options:
        report["layers"] = layer_rows(out)
    (out / "fp8-layer-check.json").write_text(json.dumps(report, indent=1))
    (out / "fp8-layer-check.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
