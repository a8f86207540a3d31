"""Median training tokens/s and step time of runs, from their metrics.csv, as a markdown table.

    python benchmarks/scripts/tokens_per_sec.py RUN_A/metrics.csv [RUN_B/metrics.csv ...]

The first 3 optimizer steps (compilation, allocator warm-up, paged optimizer state) are left out.
"""

import csv
import os
import statistics
import sys

WARMUP_STEPS = 3


def column(path: str, name: str) -> list[float]:
    with open(path, newline="") as f:
        # throughput rows carry the optimizer steps done (1 after the first step; 0 after its first micro batch)
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name) and int(float(r["step"])) > WARMUP_STEPS]


def main(paths: list[str]) -> None:
    print("| metrics | steps | median tokens/s | median step s |")
    print("|---|---:|---:|---:|")
    for path in paths:
        if not os.path.isfile(path):
            print(f"| {path} | missing | - | - |")
            continue
        rate, step = column(path, "train/tokens_per_sec"), column(path, "train/step_time_s")
        if not rate:
            print(f"| {path} | 0 | - | - |")
            continue
        print(f"| {path} | {len(rate)} | {statistics.median(rate):,.0f} | {statistics.median(step):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
