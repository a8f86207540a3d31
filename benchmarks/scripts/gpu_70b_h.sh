#!/usr/bin/env bash
# Run H (issue #22): FP8 base matmuls end to end at 70B, beside the peer (Unsloth) in the same command.
#   gpu_70b_h.sh cap     the peer with offloaded checkpointing (4 x 1024), then nextai capped, bf16 and fp8
#   gpu_70b_h.sh fast    (same warm machine, after cap) nextai fast, bf16 and fp8, on the checkpoint cap built
#   gpu_70b_h.sh nogc    the peer without checkpointing, then fast bf16/fp8 and V5-like hours of fast-fp8 and capped-fp8
#   gpu_70b_h.sh nogc-short  the same comparison for fast fp8 alone (fits what is left of a session's device time)
#   gpu_70b_h.sh nogc-h100   the whole H100 beside the peer without checkpointing: the peer fits 1 and maybe 2 x 1024
#                        tokens a step there (4 x 1024 needs 122 GiB), so nextai runs its whole-card fast recipe at
#                        packs of 4096 and at the peer's tokens a step
#   gpu_70b_h.sh small   why fast fp8 at 1024 tokens a step trails the peer there: 4-layer profiles (layers kept) of
#                        nextai fp8 and bf16 at 1024 tokens, Unsloth without checkpointing at 1 x 1024, then nextai
#                        fp8 at 4096 (kernel time by kind, and how busy the GPU is)
#   gpu_70b_h.sh v5cap   (an H100, where nogc cannot run) V5-like hours of capped bf16 and capped fp8
#   gpu_70b_h.sh alloc   the allocator's retries under the cap: capped fp8 and bf16 with torch's default caching, then
#                        with garbage_collection_threshold (cached blocks reclaimed before the cap forces a retry),
#                        on expandable segments (nextai's default) and on fixed ones
#   gpu_70b_h.sh retries what the allocator's retries under the cap cost: capped fp8 and bf16 held to their 36.5 GiB
#                        plan, the same plans with the allocator uncapped, then fp8 planned for 36 GiB under a 36.5
#                        GiB cap (a 0.5 GiB margin between the allocated peak and the cap: refused at 70B, whose
#                        smallest step is 36.4 GiB; the row records that)
#   gpu_70b_h.sh host    where a short fp8 step's time goes on the host: profiles of the whole 80-layer fast model
#                        at 1024 tokens, fp8 then bf16 (CPU ops and Python functions with their self CPU time, where
#                        each synchronization comes from), then the peer without checkpointing at 1 x 1024 (what fits
#                        an H100) beside nextai fp8 at packs of 1024, 2048 and 4096 and bf16 at 1024 (run K, on an H200)
#   gpu_70b_h.sh tests   every @pytest.mark.gpu test
# One `device` call each, from the repository root, carrying .whl (nextai's wheels), .whlpeer and .peers (the peer:
# ../shared/peers/unsloth_vs_plain.py and build_nf4_checkpoint.py, copied; wheels as ../shared/peers/README.md says).
set -uo pipefail
arm=${1:?usage: gpu_70b_h.sh cap|fast|nogc|nogc-short|nogc-h100|small|host|v5cap|alloc|retries|tests}
source benchmarks/scripts/gpu_env.sh
source benchmarks/scripts/gpu_70b_lib.sh
FP8=base_matmul=fp8
case "$arm" in
  cap)
    build
    peer peer-gc.log
    bench 330 bench-70b-h-cap $FIXED --recipe capped --recipe capped:$FP8
    allocator bench-70b-h-cap ;;
  fast)
    [ -d /tmp/nextai-bench/70b-nf4 ] || build
    bench 330 bench-70b-h-fast $FIXED --recipe fast --recipe fast:$FP8
    allocator bench-70b-h-fast ;;
  nogc)
    build
    peer peer-nogc.log --unsloth-env UVP_UNSLOTH_GC=false
    bench 330 bench-70b-h-nogc $FIXED --lengths v5-like --recipe fast --recipe fast:$FP8 --recipe capped:$FP8
    allocator bench-70b-h-nogc ;;
  nogc-short)
    build
    peer peer-nogc.log --unsloth-env UVP_UNSLOTH_GC=false
    bench 240 bench-70b-h-nogc $FIXED --lengths v5-like --recipe fast:$FP8
    allocator bench-70b-h-nogc ;;
  nogc-h100)
    build
    peer peer-nogc-h100.log --unsloth-env UVP_UNSLOTH_GC=false --cases 1x1024,2x1024
    bench 260 bench-70b-h-nogc-h100 $FIXED --recipe fast --recipe fast:$FP8 --recipe fast:$FP8,pack_length=1024 \
      --recipe fast:$FP8,pack_length=2048
    allocator bench-70b-h-nogc-h100 ;;
  small)
    TABLES="sed -n /^#.GPU/,/^|.kernel/p;/Error/p"
    for run in "1024 keep fp8" "1024 keep bf16"; do
      timeout 80 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile $run 2>&1 | $TABLES
    done
    peer_wheels
    UNSLOTH_COMPILE_LOCATION=/tmp/unsloth_compiled_cache timeout 150 \
      python3 benchmarks/scripts/profile_peer_70b_layers.py $OUT/profile keep 1x1024 2>&1 | $TABLES
    timeout 80 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile 4096 keep fp8 2>&1 | $TABLES ;;
  host)
    build
    TABLES="sed -n /^#.GPU/,/^|.kernel/p;/Error/p"
    for matmul in fp8 bf16; do
      timeout 150 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile 1024 fast $matmul 2>&1 | $TABLES
    done
    peer peer-host.log --unsloth-env UVP_UNSLOTH_GC=false --cases 1x1024
    bench 240 bench-70b-h-host $FIXED --recipe fast:$FP8 --recipe fast:$FP8,pack_length=1024 \
      --recipe fast:pack_length=1024 --recipe fast:$FP8,pack_length=2048
    allocator bench-70b-h-host ;;
  v5cap)
    build
    bench 420 bench-70b-h-v5cap --lengths v5-like --recipe capped --recipe capped:$FP8
    allocator bench-70b-h-v5cap ;;
  alloc)
    [ -d /tmp/nextai-bench/70b-nf4 ] || build
    bench 200 bench-70b-h-alloc-default $FIXED --recipe capped:$FP8 --recipe capped
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,garbage_collection_threshold:0.9 \
      bench 120 bench-70b-h-alloc-gc90 $FIXED --recipe capped:$FP8
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False,garbage_collection_threshold:0.9 \
      bench 120 bench-70b-h-alloc-gc90-fixed-segments $FIXED --recipe capped:$FP8
    for name in default gc90 gc90-fixed-segments; do allocator bench-70b-h-alloc-$name; done ;;
  retries)
    [ -d /tmp/nextai-bench/70b-nf4 ] || build
    bench 170 bench-70b-h-retries-plan $FIXED --recipe capped:$FP8 --recipe capped
    bench 170 bench-70b-h-retries-off $FIXED --recipe capped:$FP8 --recipe capped --allocator-cap off
    bench 110 bench-70b-h-retries-margin $FIXED --recipe capped:$FP8,memory_budget=36GiB --allocator-cap 36.5GiB
    for name in plan off margin; do allocator bench-70b-h-retries-$name; done ;;
  tests)
    timeout 500 python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee $OUT/gpu-tests.log | tail -4 ;;
  *) echo "unknown arm $arm"; exit 2 ;;
esac
