#!/usr/bin/env bash
# GPU run G (70B shape, issue #8): LoRA's input side (x * m) A^T and its backward in two fused Triton kernels
# (`modules/lora_dropout.py`). One device command per arm:
#   gpu_70b_g.sh kernels   GPU tests of the fused kernels and of the dequantization; their speed against the torch
#                          path, with a launch sweep; the 4-layer profiles (layers kept and recomputed)
#   gpu_70b_g.sh cap       the peer with offloaded checkpointing (4 x 1024) beside nextai's capped and fast recipes
#   gpu_70b_g.sh nogc      the peer without checkpointing beside nextai's fast recipe; V5-like hours of fast, capped
#                          and the report's recipe in the same process
#   gpu_70b_g.sh tests     all GPU tests
#   gpu_70b_g.sh confirm   both comparisons again in one command: the peer with and without checkpointing, then
#                          nextai's capped and fast recipes
set -uo pipefail
arm=${1:?usage: gpu_70b_g.sh kernels|cap|nogc|tests|confirm}
source benchmarks/scripts/gpu_env.sh
source benchmarks/scripts/gpu_70b_lib.sh
case "$arm" in
  kernels)
    GPU_TESTS_S=300 gpu_tests tests/e2e/test_lora_dropout_gpu.py ${MORE_TESTS:-}
    timeout 200 python3 benchmarks/scripts/lora_dropout_speed.py $OUT/dropout ${SWEEP:-}
    layer_profiles ;;
  cap)
    beside_offloaded 280 bench-70b-g-cap ;;
  nogc)
    beside_no_gc bench-70b-g-nogc ;;
  confirm)
    build
    peer peer-gc.log
    peer peer-nogc.log --unsloth-env UVP_UNSLOTH_GC=false
    bench 250 bench-70b-g-confirm $FIXED --recipe capped --recipe fast
    allocator bench-70b-g-confirm ;;
  tests)
    timeout 400 python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee $OUT/gpu-tests.log | tail -3 ;;
  *) echo "unknown arm $arm"; exit 2 ;;
esac
