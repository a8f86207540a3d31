"""`nextai bench`: time training recipes on a LLaMA shape with random NF4 weights and write the table.

    nextai bench --shape 70b --recipe report --recipe packed --recipe capped --recipe fast \\
        --lengths v5-like --out benchmarks/results      # or --config bench.yaml (shape:, recipe: [...], ...)

Builds (or reuses) the random NF4 checkpoint, then runs the recipes in child processes (one per group of recipes
that share a loaded base), and writes `bench-SHAPE-LENGTHS.json` and `.md`: per recipe the peak allocated and
reserved memory, the time of a full optimizer step, real tokens/s over the length distribution, the fraction of the
measured bf16 matmul rate it reaches, and the projected hours for the whole distribution.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from nextai.atomic import write_json, write_text
from nextai.bench.lengths import lengths_from_spec
from nextai.bench.recipes import RECIPES, parse_recipe
from nextai.bench.shapes import SHAPES
from nextai.errors import NextaiError
from nextai.options import command_parser, option, parse_command_args
from nextai.units import parse_memory


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = command_parser("nextai bench", __doc__.split("\n\n")[0])
    option(parser, "shape", default="70b", choices=sorted(SHAPES), help="LLaMA-2 architecture")
    option(parser, "model_dir", help="random NF4 checkpoint directory (built when missing)")
    option(parser, "recipe", action="append", dest="recipes",
           help=f"NAME[:key=value,...], repeatable; names: {', '.join(RECIPES)} (default: all)")
    option(parser, "lengths", action="append",
           help="v5-like | fixed:LENGTHxCOUNT | prepared:PATH; repeatable (default v5-like)")
    option(parser, "timed_batches", type=int, default=5, help="micro batches timed per recipe")
    option(parser, "out", default="benchmarks/results", help="directory for the JSON and markdown tables")
    option(parser, "timeout", type=float, default=540, help="seconds per child process")
    option(parser, "name", help="file name stem (default bench-SHAPE-LENGTHS)")
    option(parser, "allocator_cap", default="plan",
           help="plan (torch's allocator held to each recipe's memory budget, as training does) | off (the same "
                "memory plan, allocator uncapped) | SIZE such as 37GiB: what the cap's allocator retries cost")
    args = parse_command_args(parser, argv)
    if args.allocator_cap not in ("plan", "off"):
        parse_memory(args.allocator_cap, "--allocator-cap")  # one line naming the value, before any GPU work
    return args


def groups(recipes) -> list[list]:
    """Recipes that can share one loaded base, in the order given."""
    ordered: dict[tuple, list] = {}
    for recipe in recipes:
        ordered.setdefault(recipe.load_key(), []).append(recipe)
    return list(ordered.values())


def run_group(group, args, model_dir: Path, rate: float | None) -> tuple[list[dict], float | None]:
    job = {"model_dir": str(model_dir), "shape": args.shape, "lengths": args.lengths,
           "timed_batches": args.timed_batches, "matmul_tflops": rate,
           "allocator_cap": args.allocator_cap, "recipes": [asdict(r) for r in group]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    results = []
    try:
        process = subprocess.run([sys.executable, "-m", "nextai.bench.child", f.name], capture_output=True, text=True,
                                 timeout=args.timeout)
        output = process.stdout
        sys.stderr.write(process.stderr[-4000:] if process.returncode else "")
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
    finally:
        os.unlink(f.name)
    for line in output.splitlines():
        if line.startswith("MATMUL "):
            rate = rate or float(line.split()[1])
        elif line.startswith("RESULT "):
            results.append(json.loads(line[len("RESULT "):]))
            print(f"  {results[-1]['recipe']}: {results[-1].get('tokens_per_s', results[-1]['status'])}",
                  flush=True)
    done = {(r["recipe"], r.get("lengths")) for r in results}
    results += [{"recipe": r.name, "description": r.description, "lengths": spec,
                 "status": "did not finish (timeout or crash)"}
                for r in group for spec in args.lengths if (r.name, spec) not in done]
    return results, rate


def markdown(rows: list[dict], header: dict) -> str:
    lines = [f"# nextai bench: {header['shape']} shape, {', '.join(header['lengths'])} lengths", "",
             f"GPU {header['gpu']}; measured bf16 matmul {header['matmul_tflops']} TFLOP/s; torch {header['torch']}, "
             f"transformers {header['transformers']}, bitsandbytes {header['bitsandbytes']}; {header['date']}.",
             f"Command: `{header['command']}`", "",
             "| recipe | lengths | micro batch | attention | peak alloc GiB | peak reserved GiB | step s (tokens) "
             "| allocator retries | real tokens/s | % bf16 matmul | hours for the lengths |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['recipe']} | {r.get('lengths', '')} | {r['status']}: {r.get('error', '')} "
                         "| | | | | | | | |")
            continue
        lines.append(f"| {r['recipe']} | {r['lengths']} | {r['micro_batch']} | {r['attention']} | "
                     f"{r['peak_allocated_gib']} | "
                     f"{r['peak_reserved_gib']} | {r['step_s']} ({r['step_tokens']}) | "
                     f"{r.get('allocator', {}).get('alloc_retries', '')} | {r['tokens_per_s']:,.0f} | "
                     f"{100 * r['matmul_fraction']:.0f}% | {r['epoch_hours']} |")
    described = {}
    for r in rows:
        plan = f" Memory plan ({r['lengths']}): {r['memory_plan']}." if r.get("memory_plan") else ""
        if r.get("allocator_cap", "plan") != "plan":
            plan += (" Torch's allocator uncapped (`--allocator-cap off`)." if r["allocator_cap"] == "off" else
                     f" Torch's allocator held to {r['allocator_cap']} instead (`--allocator-cap`).")
        described[r["recipe"]] = described.get(r["recipe"], f"- `{r['recipe']}`: {r['description']}") + plan
    lines += ["", "Recipes:", *described.values()]
    lines += ["", "Real tokens/s and hours: K micro batches timed (forward + backward), `time = a + b x tokens` "
              "fitted, summed over every micro batch of the distribution, plus the optimizer steps. Allocator retries: "
              "torch's caching allocator freeing its cache to stay under the cap, in the timed micro batches. "
              "% bf16 matmul: (4N + 2N x recomputed share) FLOPs per token x tokens/s over the measured rate."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    args.lengths = args.lengths or ["v5-like"]
    recipes = [parse_recipe(spec) for spec in (args.recipes or list(RECIPES))]
    for spec in args.lengths:  # a typo is named now, not by each child after it loaded the base
        lengths_from_spec(spec)
    import torch

    if not torch.cuda.is_available():
        raise NextaiError("nextai bench needs a CUDA GPU")
    from nextai.bench.build import build_random_nf4

    model_dir = Path(args.model_dir or f"/tmp/nextai-bench/{args.shape}-nf4")
    started = time.time()
    build_random_nf4(args.shape, model_dir)
    print(f"checkpoint ready in {time.time() - started:.0f}s: {model_dir}", flush=True)
    rows, rate = [], None
    for group in groups(recipes):
        results, rate = run_group(group, args, model_dir, rate)
        rows += results
    import bitsandbytes
    import transformers

    header = {"shape": args.shape, "lengths": args.lengths, "gpu": torch.cuda.get_device_name(0),
              "matmul_tflops": round(rate, 1) if rate else None, "torch": torch.__version__,
              "transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__,
              "date": time.strftime("%Y-%m-%d"), "command": "nextai bench " + " ".join(argv)}
    stem = args.name or f"bench-{args.shape}-{'-'.join(args.lengths).replace(':', '-').replace('/', '_')}"
    out = Path(args.out)
    write_json(out / f"{stem}.json", {"header": header, "rows": rows})
    table = markdown(rows, header)
    write_text(out / f"{stem}.md", table)
    print(table)
