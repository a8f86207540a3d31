#!/usr/bin/env bash
# GPU run M (issue #9, one H200): Lightning's DDP with one device against the plain single-device run on a random
# 7B (tokens/s, the packed v5 recipe, same data and steps), then FSDP with one device on the 70B shape running the
# packed recipe for a few steps: a smoke check that the sharding wrapper, the bf16 4-bit storage (the random NF4
# checkpoint is saved with uint8 storage) and the strategy's checkpointing compose. Logs and metrics go to $OUT.
# Three device commands (each must stay under 600 s): gpu_multi.sh tests, gpu_multi.sh ddp, gpu_multi.sh fsdp
set -uo pipefail
part=${1:?usage: gpu_multi.sh tests|ddp|fsdp}
source benchmarks/scripts/gpu_env.sh
build() { timeout "$2" python3 -c "import logging; logging.basicConfig(level=logging.INFO); from nextai.bench.build import build_random_nf4; build_random_nf4('$1', '/tmp/nextai-bench/$1-nf4')"; }
# Short examples packed into 4096-token micro batches; epochs are a few steps long, so no epoch limit.
COMMON=(--config configs/v5.yaml --data.source bundled:alpaca_tiny.jsonl --data.val_size 16 --data.packing true
        --data.pack_length 4096 --trainer.limit_val_batches 0 --trainer.max_epochs 1000 --trainer.log_every_n_steps 1)
if [ "$part" = tests ]; then
  timeout 400 python3 -m pytest -m gpu tests -q -p no:cacheprovider -s 2>&1 | tee $OUT/gpu-tests.log | tail -8
  exit 0
fi
if [ "$part" = ddp ]; then
build 7b 140
for arm in plain ddp1; do
  extra=(); [ "$arm" = ddp1 ] && extra=(--trainer.strategy ddp --trainer.devices 1)
  timeout 200 python3 -m nextai fit "${COMMON[@]}" --model.base_model /tmp/nextai-bench/7b-nf4 "${extra[@]}" \
    --trainer.max_steps 20 --budget.limit 2m30s --trainer.default_root_dir /tmp/run7b-$arm > $OUT/fit7b-$arm.log 2>&1
  echo "7B $arm: exit $?"; cp /tmp/run7b-$arm/metrics.csv $OUT/fit7b-$arm-metrics.csv 2>/dev/null
  grep -h "effective batch\|attention:\|strategy" $OUT/fit7b-$arm.log | head -4
done
python3 benchmarks/scripts/tokens_per_sec.py $OUT/fit7b-plain-metrics.csv $OUT/fit7b-ddp1-metrics.csv \
  | tee $OUT/ddp1-vs-plain.md
fi
[ "$part" = fsdp ] || exit 0
# FSDP x1 on the 70B shape: 4 steps with a checkpoint every 2, then the same run resumed from step 2 in another
# directory (the adapter-only checkpoint read back by the strategy): steps 3 and 4 must log the same train loss.
build 70b 200
EVERY2=(--trainer.callbacks '[{"class_path": "nextai.callbacks.RunCheckpoint", "init_args": {"every_n_train_steps": 2}}]')
FSDP1=("${COMMON[@]}" --config configs/v5-fsdp.yaml --trainer.devices 1 --model.base_model /tmp/nextai-bench/70b-nf4
       --data.batch_size 2 --data.micro_batch_size 1 --trainer.max_steps 4 --budget.limit 3m "${EVERY2[@]}")
timeout 180 python3 -m nextai fit "${FSDP1[@]}" --trainer.default_root_dir /tmp/run70b-fsdp1 > $OUT/fsdp70b.log 2>&1
echo "70B FSDP x1: exit $?"; grep -h "fsdp\|4-bit weights\|attention:\|Error\|error" $OUT/fsdp70b.log | cut -c1-300 | head -12
ls -la /tmp/run70b-fsdp1/checkpoints /tmp/run70b-fsdp1/adapter 2>&1 | tail -8
timeout 180 python3 -m nextai fit "${FSDP1[@]}" --trainer.default_root_dir /tmp/run70b-fsdp1-resumed \
  --ckpt_path /tmp/run70b-fsdp1/checkpoints/epoch=0-step=2.ckpt > $OUT/fsdp70b-resumed.log 2>&1
echo "70B FSDP x1 resumed from step 2: exit $?"; grep -h "Error\|error\|resume" $OUT/fsdp70b-resumed.log | cut -c1-300 | head -8
cp /tmp/run70b-fsdp1/metrics.csv $OUT/fsdp70b-metrics.csv; cp /tmp/run70b-fsdp1/peak_memory.json $OUT/fsdp70b-peak_memory.json
cp /tmp/run70b-fsdp1-resumed/metrics.csv $OUT/fsdp70b-resumed-metrics.csv
python3 - <<'PY'
import csv, os
out = os.environ["OUT"]
def losses(name):
    with open(f"{out}/{name}") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}
a, b = losses("fsdp70b-metrics.csv"), losses("fsdp70b-resumed-metrics.csv")
print("train_loss by step, uninterrupted:", a); print("train_loss by step, resumed from step 2:", b)
PY
python3 benchmarks/scripts/tokens_per_sec.py $OUT/fsdp70b-metrics.csv | tee $OUT/fsdp70b.md
