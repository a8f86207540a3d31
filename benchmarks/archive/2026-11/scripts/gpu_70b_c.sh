#!/usr/bin/env bash
# GPU run C (70B shape): V5-like hours of the report's recipe against nextai's recipes in one run, and the
# report's Tables 4-6 (LoRA rank, LoRA targets, SDPA vs eager) as memory/time sweeps of the report's recipe.
set -uo pipefail
source benchmarks/scripts/gpu_env.sh
timeout 150 python3 -c "from nextai.bench.build import build_random_nf4; build_random_nf4('70b', '/tmp/nextai-bench/70b-nf4')"
timeout 200 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 5 \
  --lengths v5-like --recipe report --recipe kernels --recipe capped --recipe fast \
  --out $OUT/bench --name bench-70b-v5 --timeout 150 2>&1 | grep -E "^\| |^  " | tail -12
timeout 200 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 3 \
  --lengths fixed:1024x64 --recipe report --recipe report:lora_r=8 --recipe report:lora_r=16 \
  --recipe report:lora_r=64 --recipe report:lora_targets=key_query --recipe report:lora_targets=attention \
  --recipe report:lora_targets=ffn --recipe report:lora_targets=all --recipe report:attn_implementation=eager \
  --out $OUT/bench --name bench-70b-tables --timeout 150 2>&1 | grep -E "^\| " | tail -12
