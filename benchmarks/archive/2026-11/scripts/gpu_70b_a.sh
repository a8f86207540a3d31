#!/usr/bin/env bash
# GPU run A (70B shape): the peer (Unsloth, offloaded checkpointing, 4 x 1024) and nextai's kernels / capped / fast
# recipes in one command, on the same random NF4 checkpoint (built here by nextai; the peer reuses it).
set -uo pipefail
source benchmarks/scripts/gpu_env.sh
timeout 100 python3 -m pytest -m gpu tests -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | tail -6
grep -q " failed" $OUT/gpu-tests.log && { echo "GPU tests failed: stopping before the 70B runs"; exit 1; }
timeout 200 python3 -c "import logging; logging.basicConfig(level=logging.INFO); from nextai.bench.build import build_random_nf4; build_random_nf4('70b', '/tmp/nextai-bench/70b-nf4')"
timeout 220 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
  --targets o_down --cases 4x1024 --steps 2 --budget-s 200 2>&1 | grep -E "RESULT|unsloth \||Error|error" | tail -6
timeout 260 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
  --lengths fixed:1024x400 --lengths v5-like --recipe kernels --recipe capped --recipe fast \
  --out $OUT/bench --name bench-70b-a --timeout 250 2>&1 | tail -22
