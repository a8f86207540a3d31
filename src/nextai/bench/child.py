"""One benchmark process: load the base once, then time each recipe of a group on it.

Run by `nextai bench` as `python -m nextai.bench.child JOB.json`; prints one `RESULT {json}` line per recipe.
Each recipe is timed through `QLoRAModule` itself (its forward, loss, LoRA, activation policies) with bf16 autocast
and its optimizer, on micro batches drawn from the length distribution by nextai's own samplers and collators.

Timing: K micro batches spread over the distribution's micro-batch sizes are timed (forward + backward, after a
warm-up step and an untimed first pass of every new shape), a line `time = a + b x tokens` is fitted, and the whole epoch is projected by summing it over
every micro batch of the epoch plus the optimizer steps. Real tokens/s is the epoch's tokens over that time.
"""

import gc
import json
import math
import statistics
import sys
import time
import traceback

import numpy as np
import torch

from nextai.bench.lengths import lengths_from_spec
from nextai.bench.recipes import Recipe
from nextai.bench.shapes import parameter_count, SHAPES, VOCAB
from nextai.data.collate import PadCollator
from nextai.data.batching import accumulation_steps, compute_tokens, micro_batch_tokens
from nextai.data.packing import PackCollator, PackedBatchSampler
from nextai.data.sampler import MicroBatchSampler
from nextai.errors import first_line
from nextai.modules.loading import load_causal_lm
from nextai.modules.optim import build_optimizer
from nextai.modules.qlora import QLoRAModule
from nextai.modules.memory_plan import cap_allocator
from nextai.units import gib, parse_memory


def matmul_tflops(device: torch.device) -> float:
    """Measured dense bf16 rate: median of 10 products of 8192^3 random matrices after 3 warm-ups."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize(device)
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    del a, b
    return 2 * 8192**3 / statistics.median(times) / 1e12


def epoch_plan(recipe: Recipe, lengths: list[int]) -> list[list[int]]:
    data = recipe.data_kwargs()
    if data["packing"]:
        return PackedBatchSampler(lengths, data["pack_length"], seed=0).batches()
    return MicroBatchSampler(lengths, data["micro_batch_size"], data["batch_size"], seed=0).batches()


def pick_timed(plan: list[list[int]], lengths: list[int], packed: bool, count: int) -> list[list[int]]:
    """`count` micro batches at evenly spaced quantiles of their compute tokens (the largest always included)."""
    ranked = sorted(plan, key=lambda b: compute_tokens(b, lengths, packed))
    positions = sorted({round(q * (len(ranked) - 1)) for q in np.linspace(0.05, 1.0, count)})
    return [ranked[p] for p in positions]


def make_batch(indices: list[int], lengths: list[int], packed: bool, pack_length: int, device: torch.device,
               generator: torch.Generator) -> dict:
    examples = []
    for i in indices:
        ids = torch.randint(3, VOCAB, (lengths[i],), generator=generator)
        ids[0] = 1
        examples.append({"input_ids": ids.tolist(), "labels": ids.tolist()})
    batch = PackCollator(pack_length)(examples) if packed else PadCollator(0)(examples)
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def time_model(samples: list[tuple[int, float]]) -> tuple[float, float]:
    """(seconds per token, fixed seconds) of a micro batch. A line `a + b x tokens` when the timed micro batches
    span at least a factor of two in size (padded micro batches of one example: a fixed floor plus a per-token
    cost); otherwise time proportional to tokens (packs, all near pack_length: a line through nearly equal x
    values is meaningless)."""
    xs, ys = np.array([s[0] for s in samples], float), np.array([s[1] for s in samples], float)
    if xs.max() >= 2 * xs.min():
        slope, intercept = np.polyfit(xs, ys, 1)
        if slope > 0 and intercept >= 0:
            return float(slope), float(intercept)
    return float(np.mean(ys / xs)), 0.0


def timed(fn, device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def optimizer_seconds(optimizer, params: list[torch.Tensor], timer, repeats: int = 3) -> float:
    """Median seconds of `repeats` optimizer steps (step + zero_grad), each on the gradients the timed micro batches
    left: they are set again before every step (`zero_grad(set_to_none=True)` clears them, and an optimizer skips
    a parameter without a gradient, so a step after the first would time nothing)."""
    gradients = [p.grad.detach().clone() if p.grad is not None else None for p in params]

    def step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = []
    for _ in range(repeats):
        for p, g in zip(params, gradients):
            p.grad = None if g is None else g.clone()
        seconds.append(timer(step))
    return statistics.median(seconds)


def run_recipe(recipe: Recipe, job: dict, base, device: torch.device, rate: float, lengths_spec: str) -> dict:
    data = recipe.data_kwargs()
    packed = data["packing"]
    lengths = [min(n, data["cutoff_len"]) for n in lengths_from_spec(lengths_spec)]
    plan = epoch_plan(recipe, lengths)
    tokens_per_micro = micro_batch_tokens(packed, data["pack_length"], data["micro_batch_size"], data["cutoff_len"])
    module = QLoRAModule(base_model=job["model_dir"], cutoff_len=data["cutoff_len"], packing=packed,
                         micro_batch_tokens=tokens_per_micro, **recipe.model_kwargs())
    try:
        module.build_on(base, device)
        recap_allocator(job.get("allocator_cap", "plan"), device)
        return measure(recipe, {**job, "lengths_spec": lengths_spec}, module, plan, lengths, device, rate)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())  # a recipe's cap ends with it
        if module.model is not None:
            from nextai.modules.lean_lora import undo_lean

            undo_lean(module.model)
            module.model.unload()  # the base without this recipe's LoRA, for the next recipe
        del module
        gc.collect()
        torch.cuda.empty_cache()


def recap_allocator(spec: str, device: torch.device) -> None:
    """Hold torch's allocator to `spec` once the recipe's memory plan is made: `plan` leaves the plan's own cap,
    `off` lifts it (the same plan, no allocator retries), a size caps the allocator there instead."""
    if spec != "plan":
        cap_allocator(torch.cuda.get_device_properties(device).total_memory if spec == "off"
                      else parse_memory(spec, "--allocator-cap"), device)


def measure(recipe: Recipe, job: dict, module: QLoRAModule, plan: list[list[int]], lengths: list[int],
            device: torch.device, rate: float) -> dict:
    data = recipe.data_kwargs()
    packed = data["packing"]
    model = module.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(recipe.value("optimizer"), params, 3e-4, 0.0)
    generator = torch.Generator().manual_seed(0)
    chosen = pick_timed(plan, lengths, packed, job["timed_batches"])

    def micro_step(batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch).loss
        loss.backward()
        return loss

    warm = make_batch(chosen[-1], lengths, packed, data["pack_length"], device, generator)
    warmup_s = timed(lambda: (micro_step(warm), optimizer.step(), optimizer.zero_grad(set_to_none=True)), device)
    torch.cuda.reset_peak_memory_stats(device)
    retries_before = torch.cuda.memory_stats(device).get("num_alloc_retries", 0)  # a count since the process began
    samples, losses, seen = [], [], {compute_tokens(chosen[-1], lengths, packed)}
    for indices in chosen:
        batch = make_batch(indices, lengths, packed, data["pack_length"], device, generator)
        size = compute_tokens(indices, lengths, packed)
        if size not in seen:  # a new shape's first pass pays kernel selection and allocator growth: run it untimed
            micro_step(batch)
            seen.add(size)
        seconds = timed(lambda: losses.append(micro_step(batch).item()), device)
        samples.append((size, seconds))
    optimizer_s = optimizer_seconds(optimizer, params, lambda fn: timed(fn, device))
    peak_alloc, peak_reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    stats = torch.cuda.memory_stats(device)
    allocator = {"inactive_split_peak_gib": round(gib(stats.get("inactive_split_bytes.all.peak", 0)), 2),
                 "alloc_retries": stats.get("num_alloc_retries", 0) - retries_before}  # in the timed micro steps

    slope, intercept = time_model(samples)
    per_micro = [intercept + slope * compute_tokens(b, lengths, packed) for b in plan]
    accumulation = accumulation_steps(data["batch_size"], data["micro_batch_size"])  # one process, as measured
    steps = math.ceil(len(plan) / accumulation)
    epoch_s = sum(per_micro) + steps * optimizer_s
    real_tokens = sum(lengths[i] for b in plan for i in b)
    tokens_per_s = real_tokens / epoch_s
    policies = module.memory_plan.policies if module.memory_plan else (
        ["recompute"] * len(module.model.get_base_model().get_decoder().layers)
        if recipe.value("gradient_checkpointing") else ["keep"])
    recomputed = sum(p != "keep" for p in policies) / len(policies)
    n_matmul = parameter_count(job["shape"]) - VOCAB * SHAPES[job["shape"]]["hidden_size"]  # embeddings: lookups
    flops_per_token = (4 + 2 * recomputed) * n_matmul
    full_step_tokens = max(samples)[0]
    full_step_s = accumulation * (intercept + slope * full_step_tokens) + optimizer_s
    result = {
        "recipe": recipe.name, "description": recipe.description, "status": "ok", "lengths": job["lengths_spec"],
        "micro_batch": f"pack of {data['pack_length']}" if packed else
                       f"{data['micro_batch_size']} x <= {data['cutoff_len']} (padded)",
        "accumulation": accumulation, "attention": model.config._attn_implementation,
        "memory_plan": module.memory_plan.summary() if module.memory_plan else None,
        "peak_allocated_gib": round(gib(peak_alloc), 2), "peak_reserved_gib": round(gib(peak_reserved), 2),
        "allocator": allocator, "allocator_cap": job.get("allocator_cap", "plan"),
        "step_s": round(full_step_s, 3), "step_tokens": accumulation * full_step_tokens,
        "tokens_per_s": round(tokens_per_s, 1),
        "matmul_fraction": round(flops_per_token * tokens_per_s / (rate * 1e12), 3),
        "epoch_hours": round(epoch_s / 3600, 2), "epoch_tokens": real_tokens, "micro_batches": len(plan),
        "fit_intercept_s": round(float(intercept), 4), "fit_s_per_token": float(slope),
        "timed": [{"tokens": int(t), "s": round(s, 4)} for t, s in samples], "optimizer_s": round(optimizer_s, 4),
        "warmup_s": round(warmup_s, 2), "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
        "trainable": sum(p.numel() for p in params), "matmul_tflops": round(rate, 1),
    }
    optimizer.zero_grad(set_to_none=True)
    return result


def main(job_path: str) -> None:
    import os

    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as `nextai fit` runs
    job = json.loads(open(job_path).read())
    device = torch.device("cuda")
    rate = job.get("matmul_tflops") or matmul_tflops(device)
    print(f"MATMUL {rate:.1f}", flush=True)
    first = Recipe(**job["recipes"][0])
    from nextai.modules.quantization import Quantization

    base = load_causal_lm(job["model_dir"], Quantization(), first.value("attn_implementation"), device,
                          packed=first.value("packing"))
    for spec in job["recipes"]:
        recipe = Recipe(**spec)
        for lengths_spec in job["lengths"]:
            failed = {"recipe": recipe.name, "description": recipe.description, "lengths": lengths_spec}
            try:
                result = run_recipe(recipe, job, base, device, rate, lengths_spec)
            except torch.OutOfMemoryError as err:
                result = {**failed, "status": "out of memory", "error": first_line(err)}
                gc.collect()
                torch.cuda.empty_cache()
            except Exception as err:  # report the recipe as failed and go on with the next one
                traceback.print_exc()
                result = {**failed, "status": "failed",
                          "error": f"{type(err).__name__}: {first_line(err)}"}
            print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
