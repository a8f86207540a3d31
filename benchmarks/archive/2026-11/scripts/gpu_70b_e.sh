#!/usr/bin/env bash
# GPU run E (70B shape, issue #8): the lean LoRA layers and the Triton NF4 dequantization, on the random NF4
# checkpoint of runs A-D. One device command per arm (each under 600 s):
#   gpu_70b_e.sh screen   GPU tests, dequantization speed per weight shape, then old vs new capped/fast recipes
#                         on 4 x 1024-token packs in one process (one load)
#   gpu_70b_e.sh sweep    the Triton kernel's launch settings swept; capped (4096-token packs) with the lean layers
#                         and bitsandbytes or Triton dequantization, fast with both, with allocator statistics
#   gpu_70b_e.sh gc       the peer (Unsloth, offloaded checkpointing, 4 x 1024) beside nextai's capped recipe
#                         (two 2048-token packs) and one 4096-token pack under the same kind of plan
#   gpu_70b_e.sh nogc     the peer without checkpointing beside nextai's fast recipe, then the V5-like hours of the
#                         report's recipe, capped and fast in the same process
#   gpu_70b_e.sh chunks   ran at commit 209598b, where large weights were dequantized in pieces and masks drawn in
#                         row chunks (taken out after it): GPU tests of the kernel, the memory peak again, the peer
#                         beside one 4096-token pack, capped and fast
#   gpu_70b_e.sh fused    ran at commit 8be06ce, where LoRA dropout ran in fused Triton kernels (taken out after
#                         it): all GPU tests, then the peer beside capped, one 4096-token pack and fast
#   gpu_70b_e.sh cap      with model.memory_budget capping torch's allocator: the peer beside one 4096-token pack and
#                         two 2048-token packs (the capped recipe then: 36 GiB plan)
#   gpu_70b_e.sh final    all GPU tests on the final code; V5-like hours of the report's recipe (first in its process)
#                         and capped (one 4096-token pack a step, allocator held under 36.5 GiB)
#   gpu_70b_e.sh v5       the report's recipe first in a process of its own, then capped, on the V5-like lengths
set -uo pipefail
arm=${1:?usage: gpu_70b_e.sh screen|sweep|gc|nogc|v5|chunks|fused|cap|final}
source benchmarks/scripts/gpu_env.sh
# `screen` and `sweep` ran before the recipes took the new layers: OLD pins the capped and fast recipes as they were.
NEW="lean_lora=true,dequant_kernel=triton"
OLD="lean_lora=false,dequant_kernel=bitsandbytes,memory_budget=36.5GiB"
source benchmarks/scripts/gpu_70b_lib.sh
ONE_PACK="capped:pack_length=4096,batch_size=1,memory_budget=36.5GiB"
case "$arm" in
  screen)
    gpu_tests tests
    timeout 60 python3 benchmarks/scripts/dequant_speed.py $OUT/dequant
    build
    bench 330 bench-70b-e-screen $FIXED --recipe "capped:$OLD" --recipe "capped:$OLD,$NEW" \
      --recipe "capped:$OLD,$NEW,pack_length=4096,batch_size=1" --recipe "fast:${OLD%,memory*}" --recipe "fast:$NEW" ;;
  sweep)
    gpu_tests tests/e2e/test_nf4_dequant_gpu.py
    timeout 150 python3 benchmarks/scripts/dequant_speed.py $OUT/dequant --sweep 2>&1 | tail -14
    build
    bench 250 bench-70b-e-sweep $FIXED --recipe "capped:$OLD,lean_lora=true,pack_length=4096,batch_size=1" \
      --recipe "capped:$OLD,$NEW,pack_length=4096,batch_size=1" --recipe "fast:$NEW"
    allocator bench-70b-e-sweep ;;
  gc)  # the peer with offloaded checkpointing beside the capped recipes
    build
    peer peer-gc.log
    bench 230 bench-70b-e-gc $FIXED --recipe capped --recipe "$ONE_PACK" ;;
  chunks)  # at 209598b: weights dequantized in pieces, masks in row chunks
    gpu_tests tests/e2e/test_nf4_dequant_gpu.py
    timeout 100 python3 benchmarks/scripts/memory_peak_70b_layers.py $OUT/mem triton 2>&1 | grep -E "^\| [0-9]|peak" | head -8
    build
    peer peer-gc.log
    bench 250 bench-70b-e-chunks $FIXED --recipe "$ONE_PACK" --recipe capped --recipe fast ;;
  fused)  # at 8be06ce: LoRA dropout in fused Triton kernels
    gpu_tests tests
    build
    peer peer-gc.log
    bench 250 bench-70b-e-fused $FIXED --recipe capped --recipe "$ONE_PACK" --recipe fast ;;
  cap)  # memory_budget holds torch's allocator: the peer beside capped plans of 2048 and 4096 tokens
    gpu_tests tests/e2e/test_gpu_levers.py
    build
    peer peer-gc.log
    bench 280 bench-70b-e-cap $FIXED --recipe "$ONE_PACK" --recipe capped
    allocator bench-70b-e-cap ;;
  final)  # all GPU tests; V5-like hours: the report's recipe first, then capped
    gpu_tests tests
    build
    bench 280 bench-70b-e-final-v5 --lengths v5-like --recipe report --recipe capped ;;
  v5)  # the report's recipe first in its process, then capped, on the V5-like lengths
    build
    bench 280 bench-70b-e-v5 --lengths v5-like --recipe report --recipe capped ;;
  nogc)  # the peer without checkpointing beside the fast recipe; V5-like hours of report, capped and fast
    build
    peer peer-nogc.log --unsloth-env UVP_UNSLOTH_GC=false
    bench 300 bench-70b-e-nogc $FIXED --lengths v5-like --recipe fast --recipe capped --recipe report ;;
  *) echo "unknown arm $arm"; exit 2 ;;
esac
