#!/usr/bin/env bash
# FP8 base GEMMs (issue #22) on the GPU, one device command (carry .whl: bitsandbytes 0.50.2, liger-kernel 0.8.5):
#   fp8_gpu.sh check   the GPU tests of the FP8 path and of the lean layers and kernels it plugs into, then
#                      fp8_layer_check.py: per-projection numerics and speed at the 70B shape, and four 70B decoder
#                      layers (kernels recipe, 4096 tokens) with bf16 and FP8 base GEMMs, timed and profiled
#   fp8_gpu.sh verify  the FP8 GPU tests again, then the NF4 -> e4m3 launch sweep and the four layers (no
#                      per-projection part)
set -uo pipefail
arm=${1:?usage: fp8_gpu.sh check|verify}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false NEXTAI_CACHE_DIR=/tmp/nextai-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, \
  'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', b.__version__)"
case "$arm" in
  check)
    timeout 260 python3 -m pytest -m gpu tests/e2e/test_fp8_gpu.py tests/e2e/test_nf4_dequant_gpu.py \
      tests/e2e/test_lora_dropout_gpu.py -q -p no:cacheprovider -rf 2>&1 | tee $OUT/fp8-gpu-tests.log | tail -25
    timeout 280 python3 benchmarks/scripts/fp8_layer_check.py $OUT 2>&1 | tail -60 ;;
  verify)
    timeout 100 python3 -m pytest -m gpu tests/e2e/test_fp8_gpu.py -q -p no:cacheprovider -rf 2>&1 \
      | tee $OUT/fp8-gpu-tests.log | tail -25
    timeout 120 python3 benchmarks/scripts/fp8_layer_check.py $OUT --sweep --skip-projections 2>&1 | tail -40 ;;
  *) echo "unknown arm $arm"; exit 2 ;;
esac
