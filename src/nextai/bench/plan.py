"""`nextai plan`: how long the configured data takes with measured step times, whether it fits the wall-clock
budget and the memory cap, and which recipe / pack length would.

Step times come from a `nextai bench` table (per recipe: seconds per micro batch as a function of its tokens, the
optimizer step, peak memory) or from a run's own `metrics.csv` (its measured real tokens per second). The data's
token lengths come from the data module (tokenized once, as `fit` would) or from a named distribution.

For N GPUs (`--devices N`) the 1-GPU measurements are projected, not measured: see `scale_to_devices`.
"""

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from nextai.data.batching import accumulation_steps, compute_tokens
from nextai.errors import NextaiError
from nextai.units import gib


@dataclass(frozen=True)
class Projection:
    source: str  # which measurement
    batching: str
    hours: float
    tokens_per_s: float
    peak_reserved_gib: float | None
    memory_plan: str | None = None
    devices: int = 1

    def fits(self, budget_hours: float, memory_cap_gib: float | None) -> bool:
        memory_ok = memory_cap_gib is None or self.peak_reserved_gib is None or self.peak_reserved_gib <= memory_cap_gib
        return self.hours <= budget_hours and memory_ok


def micro_batches(lengths: list[int], packing: bool, pack_length: int, micro_batch_size: int,
                  batch_size: int) -> list[list[int]]:
    """One epoch's micro batches as nextai's samplers would cut them (torch's generator orders them: imported here,
    so a plan from a run's speed alone starts without torch)."""
    from nextai.data.packing import PackedBatchSampler
    from nextai.data.sampler import MicroBatchSampler

    if packing:
        return PackedBatchSampler(lengths, pack_length, seed=0).batches()
    return MicroBatchSampler(lengths, micro_batch_size, batch_size, seed=0).batches()


def project_bench_row(row: dict, lengths: list[int], epochs: int) -> Projection:
    """Apply one bench row's time model to these lengths, batched as that row's recipe batches."""
    from nextai.bench.recipes import parse_recipe

    data = parse_recipe(row["recipe"]).data_kwargs()
    clipped = [min(n, data["cutoff_len"]) for n in lengths]
    plan = micro_batches(clipped, data["packing"], data["pack_length"], data["micro_batch_size"], data["batch_size"])
    seconds = sum(row["fit_intercept_s"] + row["fit_s_per_token"] * compute_tokens(b, clipped, data["packing"])
                  for b in plan)
    steps = math.ceil(len(plan) / accumulation_steps(data["batch_size"], data["micro_batch_size"]))
    seconds = epochs * (seconds + steps * row["optimizer_s"])
    batching = (f"packs of {data['pack_length']}" if data["packing"]
                else f"{data['micro_batch_size']} x <= {data['cutoff_len']}, padded")
    return Projection(f"bench {row['recipe']} ({row['lengths']})", batching, seconds / 3600,
                      epochs * sum(clipped) / seconds, row["peak_reserved_gib"], row.get("memory_plan"))


def project_run(run_dir: Path, lengths: list[int], epochs: int) -> Projection:
    """Use the real tokens per second a run logged (the mean of its logged windows)."""
    path = run_dir / "metrics.csv"
    try:
        with open(path) as f:
            rates = [float(r["train/tokens_per_sec"]) for r in csv.DictReader(f) if r.get("train/tokens_per_sec")]
    except FileNotFoundError:
        raise NextaiError(f"{path}: no metrics.csv in that run directory") from None
    if not rates:
        raise NextaiError(f"{path}: the run logged no train/tokens_per_sec yet")
    rate = sum(rates[1:] or rates) / len(rates[1:] or rates)  # the first window carries warm-up
    peak = None
    memory = run_dir / "peak_memory.json"
    if memory.exists():
        peak = json.loads(memory.read_text()).get("run_peak", {}).get("peak_reserved_gib")
    return Projection(f"run {run_dir}", "as configured in that run", epochs * sum(lengths) / rate / 3600, rate, peak)


DDP_EFFICIENCY = 0.9  # assumed default, not measured: see scale_to_devices


def scale_to_devices(projection: Projection, devices: int, efficiency: float = DDP_EFFICIENCY) -> Projection:
    """A 1-GPU projection carried to `devices` GPUs under DDP: each GPU trains 1/devices of every step's micro
    batches at the measured 1-GPU speed, and `efficiency` (0 < e <= 1) is the share of that ideal speed-up left
    after the all-reduce of the LoRA gradients, stragglers (the slowest rank sets the pace) and data loading:
    hours / (devices x efficiency). Memory per GPU is the 1-GPU peak (DDP replicates the model and optimizer)."""
    if devices < 1:
        raise NextaiError(f"devices must be at least 1, got {devices}")
    if not 0 < efficiency <= 1:
        raise NextaiError(f"ddp_efficiency must be in (0, 1], got {efficiency}")
    if devices == 1:
        return projection
    speedup = devices * efficiency
    return replace(projection, source=f"{projection.source} x {devices} GPUs (projected)",
                   hours=projection.hours / speedup, tokens_per_s=projection.tokens_per_s * speedup, devices=devices)


def device_assumptions(devices: int, efficiency: float) -> str:
    """What a projection to several GPUs assumes, stated with the numbers."""
    if devices == 1:
        return "1 GPU: as measured"
    return (f"{devices} GPUs: projected, not measured: 1-GPU step times / ({devices} x {efficiency:g} DDP "
            f"efficiency, an assumption: set --ddp_efficiency from a measured multi-GPU run); the same effective "
            f"batch (accumulation divided by {devices}); peak memory per GPU as on one GPU (DDP replicates the "
            f"model; FSDP's smaller per-GPU memory and its communication are not modelled)")


def load_bench_rows(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text())["rows"]
    except FileNotFoundError:
        raise NextaiError(f"bench table not found: {path}") from None
    except (ValueError, KeyError):
        raise NextaiError(f"{path}: not a nextai bench JSON table (no rows)") from None
    return [r for r in rows if r.get("status") == "ok"]


def advice(projections: list[Projection], budget_hours: float, memory_cap_gib: float | None) -> list[str]:
    fitting = [p for p in projections if p.fits(budget_hours, memory_cap_gib)]
    lines = []
    if fitting:
        best = min(fitting, key=lambda p: p.hours)
        lines.append(f"fastest that fits: {best.source}, {best.hours:.1f} h ({best.batching})")
    else:
        lines.append("nothing measured fits both the budget and the memory cap")
        within_memory = [p for p in projections if p.fits(float("inf"), memory_cap_gib)]
        if within_memory:
            best = min(within_memory, key=lambda p: p.hours)
            share = budget_hours / best.hours
            lines.append(f"within the memory cap the fastest is {best.source}: {best.hours:.1f} h, so the budget "
                         f"covers {100 * share:.0f} % of the data; raise the budget to {math.ceil(best.hours)} h or "
                         f"shrink the data")
        else:
            smallest = min(projections, key=lambda p: p.peak_reserved_gib or 0)
            lines.append(f"the smallest measured peak is {smallest.peak_reserved_gib} GiB ({smallest.source}): "
                         "set model.memory_budget to the cap and use shorter packs (data.pack_length)")
    return lines


def render(projections: list[Projection], data_line: str, budget_hours: float, memory_cap_gib: float | None,
           notes: tuple[str, ...] = ()) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"nextai plan: {data_line}; budget {budget_hours:g} h"
                        + (f", memory cap {memory_cap_gib:.1f} GiB" if memory_cap_gib else ""))
    for column in ("measured", "batching", "hours", "tokens/s", "peak GiB", "fits"):
        table.add_column(column)
    for p in sorted(projections, key=lambda p: p.hours):
        table.add_row(p.source, p.batching, f"{p.hours:.2f}", f"{p.tokens_per_s:,.0f}",
                      f"{p.peak_reserved_gib:.1f}" if p.peak_reserved_gib is not None else "?",
                      "yes" if p.fits(budget_hours, memory_cap_gib) else "no")
    console = Console(record=True, width=140)
    console.print(table)
    for line in advice(projections, budget_hours, memory_cap_gib):
        console.print(line)
    for p in projections:
        if p.memory_plan:
            console.print(f"memory plan of {p.source}: {p.memory_plan}")
    for note in notes:
        console.print(note)
    return console.export_text()


def describe_lengths(lengths: list[int]) -> str:
    total = sum(lengths)
    return f"{len(lengths):,} examples, {total / 1e6:.2f} M tokens (mean {total / len(lengths):.0f})"


def memory_cap_gib(memory_budget: str | None) -> float | None:
    if memory_budget in (None, "card"):
        return None
    from nextai.units import parse_memory

    return gib(parse_memory(memory_budget, "model.memory_budget"))


def configured_lengths(datamodule) -> list[int]:
    """The training split's token lengths, tokenized (and cached) exactly as `fit` would."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    return list(datamodule.train_set["length"])


def plan_command(datamodule, bench: str | None, run: str | None, lengths_spec: str | None, epochs: int,
                 budget_seconds: float, memory_budget: str | None, devices: int = 1,
                 ddp_efficiency: float = DDP_EFFICIENCY) -> str:
    from nextai.bench.lengths import lengths_from_spec

    if not bench and not run:
        raise NextaiError("nextai plan needs measured step times: --bench TABLE.json (from nextai bench) or "
                          "--run RUN_DIR (a run's metrics.csv)")
    lengths = lengths_from_spec(lengths_spec) if lengths_spec else configured_lengths(datamodule)
    projections = []
    if bench:
        projections += [project_bench_row(row, lengths, epochs) for row in load_bench_rows(Path(bench))]
    if run:
        projections.append(project_run(Path(run), lengths, epochs))
    projections = [scale_to_devices(p, devices, ddp_efficiency) for p in projections]
    data_line = f"{lengths_spec or 'configured data'}: {describe_lengths(lengths)}, {epochs} epoch(s)"
    notes = (device_assumptions(devices, ddp_efficiency),) if devices > 1 else ()
    return render(projections, data_line, budget_seconds / 3600, memory_cap_gib(memory_budget), notes)
