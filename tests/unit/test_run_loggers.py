"""The run's own metrics.csv: Lightning's CSV format, appended across resumes; the loggers a command runs with."""

import csv
import sys

import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from nextai.loggers import MLflow, RunCSVLogger, TensorBoard, run_loggers

# What a run logs, call by call: rows of one column and of several, a column first seen late (the header widens),
# a tensor value, a row without a step.
CALLS = [({"train_loss": 2.5, "epoch": 0}, 0), ({"lr-AdamW": 1e-3}, 0), ({"train_loss": 2.25, "epoch": 0}, 1),
         ({"val_loss": 2.75, "epoch": 0}, 1), ({"memory/cpu_rss_gib": 0.5}, 2), ({"train_loss": 2.0}, None)]


def replay(logger, calls=CALLS):
    import torch

    for metrics, step in calls:
        metrics = {k: torch.tensor(v) if k == "train_loss" else v for k, v in metrics.items()}
        logger.log_metrics(metrics, step=step)
        logger.save()
    logger.finalize("success")


def test_metrics_csv_is_byte_for_byte_what_lightnings_csv_logger_writes(tmp_path):
    replay(CSVLogger(tmp_path / "lightning", name="", version=""))
    replay(RunCSVLogger(str(tmp_path / "nextai")))
    lightning = (tmp_path / "lightning" / "metrics.csv").read_text()
    assert lightning.splitlines()[0] == "epoch,lr-AdamW,memory/cpu_rss_gib,step,train_loss,val_loss"
    assert (tmp_path / "nextai" / "metrics.csv").read_text() == lightning


def test_rows_are_written_at_save_or_every_100_steps(tmp_path):
    logger = RunCSVLogger(str(tmp_path))
    logger.log_metrics({"train_loss": 1.0}, step=5)
    assert not (tmp_path / "metrics.csv").exists()
    logger.log_metrics({"train_loss": 1.0}, step=99)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3


def test_a_resumed_run_appends_and_keeps_the_header(tmp_path):
    replay(RunCSVLogger(str(tmp_path)), CALLS[:3])
    resumed = RunCSVLogger(str(tmp_path))
    resumed.drop_rows_from(1)
    replay(resumed, [({"train_loss": 2.2, "epoch": 0}, 1), ({"grad_norm": 0.1}, 2)])
    with open(tmp_path / "metrics.csv") as f:
        reader = csv.DictReader(f)
        rows = [(r["step"], r["train_loss"], r["grad_norm"]) for r in reader]
    assert reader.fieldnames == ["epoch", "grad_norm", "lr-AdamW", "step", "train_loss"]
    assert rows == [("0", "2.5", ""), ("0", "", ""), ("1", "2.200000047683716", ""), ("2", "", "0.1")]


def test_add_row_if_missing_adds_only_an_absent_row(tmp_path):
    logger = RunCSVLogger(str(tmp_path))
    replay(logger, CALLS[:2])
    logger.add_row_if_missing(0, {"train_loss": 2.5, "epoch": 0})  # already there
    logger.add_row_if_missing(0, {"grad_norm": 0.3, "epoch": 0})  # step 0 has rows, none with grad_norm
    logger.add_row_if_missing(3, {"train_loss": 1.5, "epoch": 0})
    with open(tmp_path / "metrics.csv") as f:
        rows = [(r["step"], r["train_loss"], r["grad_norm"]) for r in csv.DictReader(f)]
    assert rows == [("0", "2.5", ""), ("0", "", ""), ("0", "", "0.3"), ("3", "1.5", "")]


def test_hparams_yaml_collects_every_call(tmp_path):
    logger = RunCSVLogger(str(tmp_path / "run"))
    logger.log_hyperparams({"lora_r": 8, "base_model": "tiny"})
    logger.log_hyperparams({"batch_size": 4})
    assert yaml.safe_load((tmp_path / "run" / "hparams.yaml").read_text()) == {
        "lora_r": 8, "base_model": "tiny", "batch_size": 4}


def test_checkpoints_and_config_go_where_the_first_logger_says(tmp_path):
    logger = RunCSVLogger(str(tmp_path))
    # Lightning: checkpoints in save_dir/name/version/checkpoints, config.yaml in the first logger's save_dir.
    assert (logger.save_dir, logger.name, logger.version, logger.log_dir) == (str(tmp_path), "", "", str(tmp_path))


def test_the_run_csv_comes_first_and_false_turns_logging_off(tmp_path):
    assert run_loggers(str(tmp_path), False) is False
    for configured in (None, True):
        [only] = run_loggers(str(tmp_path), configured)
        assert isinstance(only, RunCSVLogger) and only.save_dir == str(tmp_path)
    mine = TensorBoardLogger(str(tmp_path / "elsewhere"))
    first, second = run_loggers(str(tmp_path), mine)
    assert isinstance(first, RunCSVLogger) and second is mine
    first, tensorboard, second = run_loggers(str(tmp_path), [TensorBoard(), mine])
    assert isinstance(tensorboard, TensorBoardLogger) and tensorboard.log_dir.rstrip("/") == str(
        tmp_path / "tensorboard") and second is mine


def test_a_location_given_wins(tmp_path, monkeypatch):
    assert TensorBoard(save_dir=str(tmp_path / "tb")).build(str(tmp_path)).log_dir.rstrip("/") == str(
        tmp_path / "tb")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert MLflow().build(str(tmp_path)).save_dir == str(tmp_path / "mlruns")
    assert MLflow(save_dir=str(tmp_path / "store")).build(str(tmp_path)).save_dir == str(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'from-env'}")
    assert MLflow().build(str(tmp_path)).save_dir == str(tmp_path / "from-env")


def test_a_named_logger_whose_package_is_missing_says_which_extra_installs_it(monkeypatch):
    from nextai.errors import NextaiError
    from nextai.loggers import Wandb

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    expected = r'^trainer.logger wandb needs the wandb package: pip install -e "\.\[wandb\]"$'
    with pytest.raises(NextaiError, match=expected):
        Wandb().check_package()


def test_the_run_logger_specs_log_nothing_themselves():
    with pytest.raises(RuntimeError, match="run_loggers"):
        TensorBoard().log_metrics({"a": 1.0}, step=0)

