#!/usr/bin/env bash
# GPU run B (70B shape): the peer without checkpointing (Unsloth's fast mode) and nextai's recipes, each lever
# switched on in turn, on the V5-like lengths and on 4 x 1024-token packs; the report's recipe in the same run.
set -uo pipefail
source benchmarks/scripts/gpu_env.sh
timeout 150 python3 -c "from nextai.bench.build import build_random_nf4; build_random_nf4('70b', '/tmp/nextai-bench/70b-nf4')"
timeout 140 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
  --targets o_down --cases 4x1024 --steps 2 --budget-s 140 --unsloth-env UVP_UNSLOTH_GC=false 2>&1 | grep -E "^\| unsloth" | tail -3
timeout 390 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
  --lengths v5-like --lengths fixed:1024x400 --recipe report --recipe packed --recipe lean --recipe kernels \
  --recipe capped --recipe fast:memory_budget=128GiB --recipe fast \
  --out $OUT/bench --name bench-70b-b --timeout 230 2>&1 | tail -30
