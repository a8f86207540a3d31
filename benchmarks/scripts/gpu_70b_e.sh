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
build() { timeout 200 python3 -c "from nextai.bench.build import build_random_nf4; build_random_nf4('70b', '/tmp/nextai-bench/70b-nf4')"; }
gpu_tests() {  # the @pytest.mark.gpu tests in the given paths; the arm stops when one fails
  timeout 150 python3 -m pytest -m gpu "$@" -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | grep -E "passed|failed"
  ! grep -q " failed" $OUT/gpu-tests.log || { echo "GPU tests failed: stopping before the 70B runs"; exit 1; }
}
peer() {  # Unsloth on the same checkpoint, 4 x 1024 tokens; extra arguments go to the peer script (LOG first)
  local log=$1; shift
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl
  timeout 220 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
    --targets o_down --cases 4x1024 --steps 2 --budget-s 200 "$@" > $OUT/$log 2>&1
  grep -E "^\| unsloth" $OUT/$log | tail -2
}
bench() {  # nextai bench on the 70B checkpoint: SECONDS NAME, then lengths and recipes
  local seconds=$1 name=$2; shift 2
  timeout $seconds python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 "$@" \
    --out $OUT/bench --name $name --timeout $((seconds - 10)) 2>&1 | grep -E "^\| (capped|fast|report)"
}
allocator() {  # peak memory and the allocator's counters of each row of bench NAME
  python3 -c "import json; [print(r['recipe'], r.get('peak_allocated_gib'), r.get('peak_reserved_gib'), r.get('allocator'))
    for r in json.load(open('$OUT/bench/$1.json'))['rows']]"
}
FIXED="--lengths fixed:1024x400"
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
