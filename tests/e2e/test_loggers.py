"""`--trainer.logger` adds TensorBoard, W&B or MLflow beside the run's own files, all inside the run directory, on the
real tiny-model path; the shorthand works on the command line and in YAML; a missing package is one line."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nextai.main import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
# Two optimizer steps on one data source, every step logged, no validation.
SHORT = ["--config", TINY, "--data.source", "bundled:alpaca_tiny.jsonl", "--data.cutoff_len", "128",
         "--data.val_size", "8", "--trainer.limit_val_batches", "0", "--trainer.max_steps", "2",
         "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1"]


def train_losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}


def assert_the_runs_own_files(run: Path) -> dict[int, float]:
    losses = train_losses(run)
    assert sorted(losses) == [0, 1], losses
    assert json.loads((run / "run.json").read_text())["state"] == "finished"
    assert "max_steps: 2" in (run / "config.yaml").read_text()
    assert "lora_r: 64" in (run / "hparams.yaml").read_text()
    return losses


def test_tensorboard_beside_the_runs_own_files(tmp_path, capsys):
    run = tmp_path / "run"
    main(["fit", *SHORT, "--trainer.default_root_dir", str(run), "--trainer.logger", "tensorboard"])
    losses = assert_the_runs_own_files(run)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = (run / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = {e.step: e.value for e in accumulator.Scalars("train_loss")}
    assert scalars == pytest.approx(losses, rel=1e-6)

    capsys.readouterr()
    main(["plan", "--config", TINY, "--run", str(run), "--trainer.default_root_dir", str(tmp_path / "plan")])
    assert f"run {run}" in capsys.readouterr().out  # plan read the run's measured tokens per second


def test_wandb_offline_writes_only_into_the_run_directory(tmp_path, tmp_path_factory, nextai_cache):
    # The shorthand in YAML; the command runs in tmp_path, which must gain nothing but the run directory.
    config = tmp_path / "wandb.yaml"
    config.write_text("trainer:\n  logger: wandb\n")
    home = tmp_path_factory.mktemp("wandb-home")  # W&B's settings and caches, away from the user's
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env.update(NEXTAI_CACHE_DIR=str(nextai_cache), WANDB_MODE="offline", WANDB_CONFIG_DIR=str(home / "config"),
               WANDB_CACHE_DIR=str(home / "cache"), WANDB_DATA_DIR=str(home / "data"), PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "-m", "nextai", "fit", *SHORT, "--config", str(config),
                             "--trainer.default_root_dir", "run"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "wandb.yaml"]
    run = tmp_path / "run"
    assert_the_runs_own_files(run)
    [offline] = (run / "wandb").glob("offline-run-*")
    [record] = offline.glob("run-*.wandb")
    assert b"train_loss" in record.read_bytes() and b"lora_r" in record.read_bytes()  # metrics and the config


def test_mlflow_file_store_in_the_run_directory(tmp_path, monkeypatch):
    # The shorthand as a list on the command line (csv is the run's own metrics.csv, always there).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # unset here, and unset again after the test
    run = tmp_path / "run"
    main(["fit", *SHORT, "--trainer.default_root_dir", str(run), "--trainer.logger", "[mlflow, csv]"])
    losses = assert_the_runs_own_files(run)
    [metric] = (run / "mlruns").glob("*/*/metrics/train_loss")
    logged = {int(step): float(value) for _, value, step in (line.split() for line in metric.read_text().splitlines())}
    assert logged == pytest.approx(losses, rel=1e-6)
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["adapter", "checkpoints", "mlruns"]


@pytest.mark.parametrize("word, package", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_logger_package_is_one_line_naming_the_extra(word, package, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *SHORT, "--trainer.default_root_dir", str(run), "--trainer.logger", f"[{word}]"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nextai: error")]
    assert errors == [f'nextai: error: trainer.logger {word} needs the {package} package: pip install -e ".[{word}]"']
    assert not run.exists()
