"""What a run leaves in its directory (`trainer.default_root_dir`), named in one place."""

import json
import shutil
from pathlib import Path

from nextai.errors import NextaiError

ADAPTER_DIR = "adapter"  # PEFT adapter: adapter_config.json + adapter_model.safetensors
TENSORBOARD_DIR, WANDB_DIR, MLFLOW_DIR = "tensorboard", "wandb", "mlruns"  # the loggers beside metrics.csv
LOGGER_DIRS = (TENSORBOARD_DIR, WANDB_DIR, MLFLOW_DIR)
CHECKPOINT_DIR = "checkpoints"  # resumable Lightning checkpoints (LoRA weights + optimizer + loop state)
PEAK_MEMORY_FILE = "peak_memory.json"
METRICS_FILE = "metrics.csv"  # written by the CSV logger
RUN_FILE = "run.json"  # state (running, finished, stopped, failed), step, reason, checkpoint, adapter
PROMPT_FORMAT_FILE = "prompt_format.json"  # how the examples were written; also in the adapter and exports
CONFIG_FILES = ("config.yaml", "hparams.yaml")  # written by LightningCLI and the CSV logger


def run_dir(trainer) -> Path:
    return Path(trainer.default_root_dir)


def check_run_dir(directory: str | Path, resuming: bool, overwrite: bool) -> None:
    """A new run never silently replaces an earlier one: resume it (`--ckpt_path last`), or say `--overwrite`."""
    directory = Path(directory)
    record_path = directory / RUN_FILE
    earlier = record_path.exists() or (directory / CHECKPOINT_DIR).exists() or (directory / ADAPTER_DIR).exists()
    if resuming or not earlier:
        return
    if overwrite:
        for name in (CHECKPOINT_DIR, ADAPTER_DIR, *LOGGER_DIRS):
            shutil.rmtree(directory / name, ignore_errors=True)
        for name in (RUN_FILE, METRICS_FILE, PEAK_MEMORY_FILE, PROMPT_FORMAT_FILE, *CONFIG_FILES):
            (directory / name).unlink(missing_ok=True)
        return
    try:
        record = json.loads(record_path.read_text())
        what = f"a {record['state']} run (step {record['step']}, started {record['started']})"
    except (OSError, ValueError, KeyError):
        what = "checkpoints or an adapter of an earlier run"
    raise NextaiError(f"{directory} already holds {what}: resume it with --ckpt_path last, replace it with "
                      "--overwrite true, or choose another --trainer.default_root_dir")
