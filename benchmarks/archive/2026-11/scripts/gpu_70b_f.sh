#!/usr/bin/env bash
# GPU run F (70B shape, issue #8): where the last 4-5 % to Unsloth goes. One device command per arm:
#   gpu_70b_f.sh profile   kernel time by kind, wall time and GPU busy share of nextai's kernels recipe and of
#                          Unsloth, on the same 4-layer 70B-shaped checkpoint, layers kept and recomputed
#   gpu_70b_f.sh kernels   GPU tests of the dequantization and dropout kernels; their speed (dequantization rounded
#                          before interleaving, Triton dropout with a launch sweep); packed attention kernels checked
#                          against a reference and timed; the nextai profiles again
#   gpu_70b_f.sh tests     all GPU tests; the nextai profiles with the CUDA runtime calls that can stall the CPU
#   gpu_70b_f.sh cap       the peer with offloaded checkpointing (4 x 1024) beside nextai's capped and fast recipes
#   gpu_70b_f.sh whole     profiles of the whole 80-layer model with the capped and the fast recipe
#   gpu_70b_f.sh workspace dequantized weights, masked inputs and LoRA gradients in one reused buffer, offloaded
#                          inputs copied back into the compute stream's pool: GPU tests, then the capped profile
#   gpu_70b_f.sh nogc      the peer without checkpointing beside nextai's fast recipe; V5-like hours of fast, capped
#                          and the report's recipe in the same process
#   gpu_70b_f.sh final     the dequantization kernel with byte-compared masks and cached tables: its GPU tests and
#                          speed, then the peer with offloaded checkpointing beside capped and fast
set -uo pipefail
arm=${1:?usage: gpu_70b_f.sh profile|kernels|tests|cap|whole|workspace|nogc|final}
source benchmarks/scripts/gpu_env.sh
source benchmarks/scripts/gpu_70b_lib.sh
case "$arm" in
  profile)
    for policy in keep recompute; do
      timeout 150 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile 4096 $policy 2>&1 | sed -n 1,14p
    done
    peer_wheels
    for policy in keep recompute; do
      UNSLOTH_COMPILE_LOCATION=/tmp/unsloth_compiled_cache \
        timeout 200 python3 benchmarks/scripts/profile_peer_70b_layers.py $OUT/profile $policy 2>&1 | grep -v Warning | tail -50
    done ;;
  kernels)
    timeout 200 python3 -m pytest -m gpu tests/e2e/test_nf4_dequant_gpu.py tests/e2e/test_lora_dropout_gpu.py -q \
      -p no:cacheprovider 2>&1 | tee $OUT/gpu-tests.log | tail -3
    timeout 60 python3 benchmarks/scripts/dequant_speed.py $OUT/dequant | tail -3
    timeout 90 python3 benchmarks/scripts/lora_dropout_speed.py $OUT/dropout --sweep
    timeout 120 python3 benchmarks/scripts/packed_attention_check.py $OUT/attention
    layer_profiles ;;
  tests)
    timeout 240 python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee $OUT/gpu-tests.log | tail -3
    layer_profiles ;;
  cap)
    beside_offloaded 280 bench-70b-f-cap ;;
  whole)
    build
    for recipe in capped fast; do
      timeout 200 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile 4096 $recipe 2>&1 | sed -n '/^# GPU/,/^| kernel/p;/^Allocator/p'
    done ;;
  workspace)
    gpu_tests tests/e2e/test_nf4_dequant_gpu.py tests/e2e/test_lora_dropout_gpu.py tests/e2e/test_packing_exact.py \
      tests/e2e/test_gpu_levers.py
    build
    timeout 200 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile 4096 capped 2>&1 | grep -v 'Warning\|warn\|Loading weights\|Backend impl' | sed -n '/^# GPU/,/^| kernel/p;/^Allocator/p;/^Memory plan/p;/Error/p' ;;
  nogc)
    beside_no_gc bench-70b-f-nogc ;;
  final)
    gpu_tests tests/e2e/test_nf4_dequant_gpu.py
    timeout 60 python3 benchmarks/scripts/dequant_speed.py $OUT/dequant | tail -1
    beside_offloaded 250 bench-70b-f-final ;;
  *) echo "unknown arm $arm"; exit 2 ;;
esac
