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
if [ "$arm" = screen ]; then
  timeout 150 python3 -m pytest -m gpu tests -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | tail -8
  grep -q " failed" $OUT/gpu-tests.log && { echo "GPU tests failed: stopping before the 70B runs"; exit 1; }
  timeout 60 python3 benchmarks/scripts/dequant_speed.py $OUT/dequant
  build
  timeout 330 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --recipe "capped:$OLD" --recipe "capped:$OLD,$NEW" \
    --recipe "capped:$OLD,$NEW,pack_length=4096,batch_size=1" --recipe "fast:${OLD%,memory*}" --recipe "fast:$NEW" --out $OUT/bench --name bench-70b-e-screen --timeout 320 2>&1 | tail -16
elif [ "$arm" = sweep ]; then
  timeout 100 python3 -m pytest -m gpu tests/e2e/test_nf4_dequant_gpu.py -q -p no:cacheprovider 2>&1 | tail -3
  timeout 150 python3 benchmarks/scripts/dequant_speed.py $OUT/dequant --sweep 2>&1 | tail -14
  build
  timeout 250 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --recipe "capped:$OLD,lean_lora=true,pack_length=4096,batch_size=1" \
    --recipe "capped:$OLD,$NEW,pack_length=4096,batch_size=1" --recipe "fast:$NEW" \
    --out $OUT/bench --name bench-70b-e-sweep --timeout 240 2>&1 | grep -E "^\| (capped|fast)"
  python3 -c "import json; [print(r['recipe'], r.get('peak_allocated_gib'), r.get('peak_reserved_gib'), r.get('allocator'))
    for r in json.load(open('$OUT/bench/bench-70b-e-sweep.json'))['rows']]"
elif [ "$arm" = gc ]; then  # the peer with offloaded checkpointing beside the capped recipes
  build
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl
  timeout 220 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
    --targets o_down --cases 4x1024 --steps 2 --budget-s 200 > $OUT/peer-gc.log 2>&1
  grep -E "^\| unsloth" $OUT/peer-gc.log | tail -2
  timeout 230 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --recipe capped --recipe "capped:pack_length=4096,batch_size=1,memory_budget=36.5GiB" \
    --out $OUT/bench --name bench-70b-e-gc --timeout 220 2>&1 | grep -E "^\| capped"
elif [ "$arm" = chunks ]; then  # after weights dequantized in pieces and masks in row chunks: the peer, capped, fast
  timeout 100 python3 -m pytest -m gpu tests/e2e/test_nf4_dequant_gpu.py -q -p no:cacheprovider 2>&1 | tail -2
  timeout 100 python3 benchmarks/scripts/memory_peak_70b_layers.py $OUT/mem triton 2>&1 | grep -E "^\| [0-9]|peak" | head -8
  build
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl
  timeout 220 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
    --targets o_down --cases 4x1024 --steps 2 --budget-s 200 > $OUT/peer-gc.log 2>&1
  grep -E "^\| unsloth" $OUT/peer-gc.log | tail -2
  timeout 250 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --recipe "capped:pack_length=4096,batch_size=1,memory_budget=36.5GiB" --recipe capped \
    --recipe fast --out $OUT/bench --name bench-70b-e-chunks --timeout 240 2>&1 | grep -E "^\| (capped|fast)"
elif [ "$arm" = fused ]; then  # LoRA dropout in fused Triton kernels: GPU tests, the peer, capped/fast/one 4096 pack
  timeout 150 python3 -m pytest -m gpu tests -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | tail -4
  grep -q " failed" $OUT/gpu-tests.log && { echo "GPU tests failed: stopping before the 70B runs"; exit 1; }
  build
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl
  timeout 220 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
    --targets o_down --cases 4x1024 --steps 2 --budget-s 200 > $OUT/peer-gc.log 2>&1
  grep -E "^\| unsloth" $OUT/peer-gc.log | tail -2
  timeout 250 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --recipe capped --recipe "capped:pack_length=4096,batch_size=1,memory_budget=36.5GiB" \
    --recipe fast --out $OUT/bench --name bench-70b-e-fused --timeout 240 2>&1 | grep -E "^\| (capped|fast)"
elif [ "$arm" = cap ]; then  # memory_budget now caps torch's allocator: the peer beside capped plans of 2048/4096
  timeout 120 python3 -m pytest -m gpu tests/e2e/test_gpu_levers.py -q -p no:cacheprovider 2>&1 | tail -2
  build
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl
  timeout 220 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
    --targets o_down --cases 4x1024 --steps 2 --budget-s 200 > $OUT/peer-gc.log 2>&1
  grep -E "^\| unsloth" $OUT/peer-gc.log | tail -2
  timeout 280 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --recipe "capped:pack_length=4096,batch_size=1,memory_budget=36.5GiB" --recipe capped \
    --out $OUT/bench --name bench-70b-e-cap --timeout 270 2>&1 \
    | grep -E "^\| capped"
  python3 -c "import json; [print(r['recipe'], r.get('peak_allocated_gib'), r.get('peak_reserved_gib'), r.get('allocator'))
    for r in json.load(open('$OUT/bench/bench-70b-e-cap.json'))['rows']]"
elif [ "$arm" = final ]; then  # all GPU tests; V5-like hours: the report's recipe first, then capped (4096 packs)
  timeout 150 python3 -m pytest -m gpu tests -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | grep -E "passed|failed"
  build
  timeout 280 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths v5-like --recipe report --recipe capped --out $OUT/bench --name bench-70b-e-final-v5 --timeout 270 2>&1 \
    | grep -E "^\| (capped|report)"
elif [ "$arm" = v5 ]; then  # the report's recipe first in its process, then capped, on the V5-like lengths
  build
  timeout 280 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths v5-like --recipe report --recipe capped --out $OUT/bench --name bench-70b-e-v5 --timeout 270 2>&1 \
    | grep -E "^\| (capped|report)"
else  # nogc: the peer without checkpointing beside the fast recipe; V5-like hours of report, capped and fast
  build
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl
  timeout 200 python3 .peers/unsloth_vs_plain.py --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --arms unsloth \
    --targets o_down --cases 4x1024 --steps 2 --unsloth-env UVP_UNSLOTH_GC=false --budget-s 180 > $OUT/peer-nogc.log 2>&1
  grep -E "^\| unsloth" $OUT/peer-nogc.log | tail -2
  timeout 300 python3 -m nextai bench --shape 70b --model-dir /tmp/nextai-bench/70b-nf4 --timed-batches 4 \
    --lengths fixed:1024x400 --lengths v5-like --recipe fast --recipe capped --recipe report \
    --out $OUT/bench --name bench-70b-e-nogc --timeout 290 2>&1 | grep -E "^\| (fast|capped|report)"
fi
