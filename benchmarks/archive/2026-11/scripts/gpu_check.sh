#!/usr/bin/env bash
# GPU check 1: the GPU-marked tests, the v5 recipe for a few steps on a random 7B, and the 7B bench.
set -uo pipefail
source benchmarks/scripts/gpu_env.sh
mkdir -p $OUT/bench7b
timeout 150 python3 -m pytest -m gpu tests -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | tail -25
timeout 120 python3 -c "import logging; logging.basicConfig(level=logging.INFO); from nextai.bench.build import build_random_nf4; build_random_nf4('7b', '/tmp/nextai-bench/7b-nf4')"
timeout 150 python3 -m nextai fit --config configs/v5.yaml --model.base_model /tmp/nextai-bench/7b-nf4 \
  --data.source bundled:alpaca_tiny.jsonl --data.val_size 16 --trainer.max_steps 20 --trainer.val_check_interval 40 \
  --trainer.log_every_n_steps 5 --trainer.default_root_dir /tmp/run7b --budget.limit 10m > $OUT/fit7b.log 2>&1
tail -5 $OUT/fit7b.log; cp /tmp/run7b/metrics.csv $OUT/fit7b-metrics.csv; cp /tmp/run7b/peak_memory.json $OUT/fit7b-peak_memory.json
grep -h "attention:\|trainable\|activations\|budget" $OUT/fit7b.log | head
timeout 240 python3 -m nextai bench --shape 7b --lengths v5-like --timed-batches 4 --out $OUT/bench7b --timeout 120 \
  --recipe report --recipe packed --recipe lean --recipe kernels --recipe capped:memory_budget=12GiB --recipe fast 2>&1 | tail -30
