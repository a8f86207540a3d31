"""Data parallelism end to end on the CPU: two gloo processes under Lightning's DDP strategy, in real subprocesses.

What must be equal for a 2-process run to match a 1-process run: the examples of every optimizer step (the
samplers cut one epoch plan into steps and give each process every other micro batch of a step), the effective
batch (each process accumulates half as many micro batches), and no randomness that depends on the process
(LoRA dropout off: each process draws its own masks). What remains different is floating-point order only: the
gradient is summed over 4 micro batches in one process, over 2 and then averaged across 2 by the all-reduce.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
# batch 8 = micro batch 2 x 4 accumulated (1 process) = micro batch 2 x 2 accumulated x 2 processes
FAST = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data.source", "bundled:alpaca_tiny.jsonl",
        "--data.cutoff_len", "128", "--data.val_size", "8", "--data.batch_size", "8", "--data.micro_batch_size", "2",
        "--model.lora_dropout", "0.0", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks", "[]"]
DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
# Same examples, same effective batch: only the summation order of the fp32 gradients differs (about 1e-7
# relative), which the 8-bit optimizer's quantized state could round into a neighbouring step now and then. Allowed:
# 1e-4 relative on the validation loss and 1e-3 relative (per tensor, in norm) on the LoRA weights after 6 steps.
# Measured here: both 0 for the loss (identical bits) and ~5e-11 for the weights. A wrong effective batch (16
# examples a step instead of 8) moved the validation loss by 6e-3 relative after the same 6 steps.
LOSS_RTOL = 1e-4
WEIGHT_RTOL = 1e-3


def fit(run: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEXTAI_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "nextai", "fit", *FAST, "--trainer.default_root_dir", str(run),
                           *extra], env=env, capture_output=True, text=True, timeout=600)


def logged(result: subprocess.CompletedProcess) -> str:
    """What the run logged (rich wraps lines on stdout), on one line."""
    return " ".join((result.stdout + result.stderr).split())


def rows(run: Path, column: str) -> dict[int, float]:
    with open(run / "metrics.csv") as f:
        return {int(r["step"]): float(r[column]) for r in csv.DictReader(f) if r.get(column)}


def assert_same_training(reference: Path, run: Path, label: str) -> None:
    """The same validation loss after STEPS steps (the same 8 examples, token-weighted, reduced over the
    processes) and the same LoRA weights as the 1-process reference, within the tolerances above."""
    one, other = rows(reference, "val_loss")[STEPS - 1], rows(run, "val_loss")[STEPS - 1]
    difference = abs(other - one) / one
    a = load_file(reference / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    weights = max(((a[k].float() - b[k].float()).norm() / a[k].float().norm()).item() for k in a)
    print(f"val_loss after {STEPS} steps: 1 process {one!r}, {label} {other!r}, relative difference "
          f"{difference:.2e} (tolerance {LOSS_RTOL:.0e}); LoRA weights: largest relative difference {weights:.2e} "
          f"(tolerance {WEIGHT_RTOL:.0e})")
    assert difference <= LOSS_RTOL
    assert weights <= WEIGHT_RTOL


def on(processes: int) -> list[str]:
    """Run on 1 or 2 processes, validating after STEPS steps (val_check_interval counts micro batches per
    process), with a checkpoint every 3 steps."""
    return [*(DDP if processes == 2 else []), "--trainer.val_check_interval", str(STEPS * 4 // processes),
            "--trainer.callbacks", '[{"class_path": "nextai.callbacks.RunCheckpoint", '
                                   '"init_args": {"every_n_train_steps": 3}}]']


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, nextai_cache):
    run = tmp_path_factory.mktemp("one")
    result = fit(run, nextai_cache, *on(1), "--trainer.max_steps", str(STEPS))
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, nextai_cache):
    run = tmp_path_factory.mktemp("two")
    result = fit(run, nextai_cache, *on(2), "--trainer.max_steps", str(STEPS))
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_two_processes_match_one_process(one_process, two_processes):
    reference, reference_result = one_process
    run, result = two_processes
    assert "data.batch_size 8 = micro batch 2 x 4 accumulated x 1 process" in logged(reference_result)
    assert "data.batch_size 8 = micro batch 2 x 2 accumulated x 2 processes" in logged(result)
    # One adapter, written once, for the same number of optimizer steps.
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("adapter")) == ["adapter"]
    record = json.loads((run / "run.json").read_text())
    assert record["state"] == "finished" and record["step"] == STEPS
    assert_same_training(reference, run, "2 processes")
    # Peak memory of each process, gathered on rank 0; both stopped at the same step.
    memory = json.loads((run / "peak_memory.json").read_text())
    assert [r["rank"] for r in memory["ranks"]] == [0, 1]
    assert [r["step"] for r in memory["ranks"]] == [STEPS, STEPS]
    assert memory["run_peak"]["cpu_peak_rss_gib"] == max(r["run_peak"]["cpu_peak_rss_gib"] for r in memory["ranks"])


def test_budget_stops_both_processes_at_the_same_step(tmp_path, nextai_cache):
    run = tmp_path / "budget"
    # Far more steps than fit in 45 s: the budget must stop both processes together, after at least one optimizer
    # step. The budget counts the two processes' start-up (about 20 s on a 2-core machine, more when it is loaded):
    # with 30 s a slow start left no room for a first step (step 0 in CI, twice).
    result = fit(run, nextai_cache, *DDP, "--trainer.max_epochs", "50", "--trainer.limit_val_batches", "0",
                 "--budget.limit", "45s", "--budget.margin", "2s")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["state"] == "stopped" and record["reason"].startswith("budget:")
    step = record["step"]
    memory = json.loads((run / "peak_memory.json").read_text())
    steps = [r["step"] for r in memory["ranks"]]
    print(f"budget stop: run.json step {step}; steps per rank {steps}")
    assert steps == [step, step] and 0 < step < 50 * 37
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == step
    # At an optimizer-step boundary: each process trained exactly `accumulation` micro batches per step.
    processed = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"]
    assert processed == step * 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("adapter")) == ["adapter"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert f"stopping at step {step}" in logged(result)


@pytest.mark.parametrize("before", [1, 2])
def test_a_resume_mid_epoch_onto_another_process_count_trains_the_same_steps(tmp_path, nextai_cache, one_process,
                                                                               two_processes, before):
    # The checkpoint after 3 of the epoch's 37 steps on `before` processes, finished on the other count: the same 6
    # steps of 8 examples as the uninterrupted runs. Validation comes after 6 steps' worth of micro batches per
    # process: it runs at step 6 only if Lightning's restored batch counters were moved to the new count too.
    started = (one_process if before == 1 else two_processes)[0]
    after = 3 - before
    run = tmp_path / "resized"
    resumed = fit(run, nextai_cache, *on(after), "--trainer.max_steps", str(STEPS), "--ckpt_path",
                  str(started / "checkpoints" / "epoch=0-step=3.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = 3 * 4 // before
    assert (f"resume: {done} micro batches into the epoch on each of {before} process(es) = {done * before // after} "
            f"on each of {after}") in logged(resumed)
    assert_same_training(one_process[0], run, f"{before} then {after} process(es)")


def test_packed_batches_on_two_processes_match_one_process(tmp_path, nextai_cache):
    # Padding-free packs of up to 512 tokens, 4 a step: 4 accumulated on 1 process, 2 on each of 2. The packs are
    # made once from the seed, so both runs train the same packs in the same steps.
    packed = ["--data.packing", "true", "--data.micro_batch_size", "1", "--data.batch_size", "4",
              "--data.pack_length", "512"]
    runs = {}
    for processes in (1, 2):
        runs[processes] = tmp_path / f"packed-{processes}"
        result = fit(runs[processes], nextai_cache, *on(processes), *packed, "--trainer.max_steps", str(STEPS))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"data.batch_size 4 = micro batch 1 x {4 // processes} accumulated x {processes} process" in logged(
            result)
    assert_same_training(runs[1], runs[2], "2 processes, packed")
