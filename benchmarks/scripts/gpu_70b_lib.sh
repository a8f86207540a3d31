# Shell functions of the 70B GPU runs (sourced by gpu_70b_e.sh, gpu_70b_f.sh and gpu_70b_g.sh after gpu_env.sh; $OUT is the
# device tool's output folder).
build() { timeout 200 python3 -c "from nextai.bench.build import build_random_nf4; build_random_nf4('70b', '/tmp/nextai-bench/70b-nf4')"; }
gpu_tests() {  # the @pytest.mark.gpu tests in the given paths; the arm stops when one fails
  timeout ${GPU_TESTS_S:-150} python3 -m pytest -m gpu "$@" -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | grep -E "passed|failed"
  ! grep -q " failed" $OUT/gpu-tests.log || { echo "GPU tests failed: stopping before the 70B runs"; exit 1; }
}
layer_profiles() {  # the 4-layer profiles of the 70B shape, layers kept and recomputed: kernel tables (and errors)
  for policy in keep recompute; do
    timeout 150 python3 benchmarks/scripts/profile_70b_layers.py $OUT/profile 4096 $policy 2>&1 | sed -n '/^# GPU/,/^| kernel/p;/Error/p'
  done
}
peer_wheels() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlpeer/*.whl; }
peer() {  # Unsloth on the same checkpoint, 4 x 1024 tokens; extra arguments go to the peer script (LOG first)
  local log=$1; shift
  peer_wheels
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
beside_offloaded() {  # SECONDS NAME: the peer with offloaded checkpointing, then nextai's capped and fast recipes
  build
  peer peer-gc.log
  bench $1 $2 $FIXED --recipe capped --recipe fast
  allocator $2
}
beside_no_gc() {  # NAME: the peer without checkpointing, then fast, capped and the report's recipe (also V5-like)
  build
  peer peer-nogc.log --unsloth-env UVP_UNSLOTH_GC=false
  bench 330 $1 $FIXED --lengths v5-like --recipe fast --recipe capped --recipe report
  allocator $1
}
