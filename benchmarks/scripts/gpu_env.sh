# Source on the GPU machine (the device tool's H200): installs the carried wheels (.whl: bitsandbytes, datasets,
# jsonargparse, liger-kernel, ...) into /tmp/site and runs nextai from the source tree, fully offline.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export NEXTAI_CACHE_DIR=/tmp/nextai-cache UNSLOTH_DISABLE_STATISTICS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, bitsandbytes, lightning, datasets, jsonargparse; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__, 'lightning', lightning.__version__, 'datasets', datasets.__version__)"
