#!/usr/bin/env bash
# GPU run D (70B shape, issue #8): the compiled-decoder-layer lever on/off on the capped (36.5 GiB) and fast recipes,
# on 4 x 1024-token packs and the V5-like lengths, on the same random NF4 checkpoint as runs A-C. Not run yet.
# compile_layers needs a fresh model load, so each arm is its own device command (each under 600 s):
#   gpu_70b_d.sh eager    then    gpu_70b_d.sh compiled
# Compilation happens in the untimed warm-up passes of each shape (nextai bench times only later batches).
set -uo pipefail
arm=${1:?usage: gpu_70b_d.sh eager|compiled}
source benchmarks/scripts/gpu_env.sh
timeout 230 python3 -c "from nextai.bench.build import build_random_nf4; build_random_nf4('70b', '/tmp/nextai-bench/70b-nf4')"
# The recipes as they were then (before the lean LoRA layers and the Triton kernel, which torch.compile does not trace).
suffix=":lean_lora=false,dequant_kernel=bitsandbytes,memory_budget=36.5GiB"
[ "$arm" = compiled ] && suffix="$suffix,compile_layers=true"
timeout 330 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
  --lengths fixed:1024x400 --lengths v5-like --recipe "capped$suffix" --recipe "fast${suffix/,memory_budget=36.5GiB/,memory_budget=card}" \
  --out $OUT/bench --name bench-70b-d-$arm --timeout 310 2>&1 | tail -20
