"""`RunStatus`: `run.json` in the run directory says whether the run is running, finished, stopped early (and why)
or failed, at which step, and where its checkpoint and adapter are; `prompt_format.json` how its examples were
written."""

import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from nextai.atomic import write_json
from nextai.internals import pending_step_row
from nextai.loggers import RunCSVLogger
from nextai.rundir import ADAPTER_DIR, CHECKPOINT_DIR, RUN_FILE, run_dir

CARRIED_ROW = "nextai_unlogged_metrics"


def resumes_its_own_run(trainer: L.Trainer) -> bool:
    """The checkpoint being resumed was written by the run in this directory (not copied from another run)."""
    return Path(trainer.ckpt_path).resolve().parent == (run_dir(trainer) / CHECKPOINT_DIR).resolve()


class RunStatus(Callback):
    """Keeps `run.json` current (rank 0), and keeps `metrics.csv` whole across a resume: the rows the resumed run
    trains again are dropped, and the row of the checkpoint's own step is carried in the checkpoint.

    Lightning saves a checkpoint in `on_train_batch_end` and logs that batch's metrics only afterwards, so a run
    killed in between leaves a checkpoint whose last step has no row on disk, and the resumed run starts after it.
    """

    def __init__(self) -> None:
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._fit_started = False  # bad input fails before: then nothing is written into the run directory
        self._carried_row: dict | None = None
        self._trained_epoch: int | None = None  # the epoch of the last batch this run trained

    def epoch(self, trainer: L.Trainer) -> int:
        """The epoch the run is in, or last trained in: Lightning advances `current_epoch` when an epoch's loop
        ends, also when `max_steps` or a stop ends it early, so after fit it names an epoch never begun."""
        return self._trained_epoch if self._trained_epoch is not None else trainer.current_epoch

    def _write(self, trainer: L.Trainer, state: str, **extra) -> None:
        if not trainer.is_global_zero:
            return
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", None) or None
        write_json(run_dir(trainer) / RUN_FILE, {
            "state": state, "step": trainer.global_step, "epoch": self.epoch(trainer), "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(), "resumed_from": trainer.ckpt_path,
            "checkpoint": checkpoint, **extra})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = True
        self._write(trainer, "running")
        # How the examples were written (the datamodule knows once set up): evaluate, serve and chat prompt the
        # model the same way, and the adapter carries a copy.
        prompt_format = getattr(trainer.datamodule, "prompt_format", None)
        if trainer.is_global_zero and prompt_format is not None:
            prompt_format.save(run_dir(trainer))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.is_global_zero and (row := pending_step_row(trainer)):
            checkpoint[CARRIED_ROW] = row

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._carried_row = checkpoint.get(CARRIED_ROW)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            for logger in trainer.loggers:
                if isinstance(logger, RunCSVLogger):
                    logger.drop_rows_from(trainer.global_step)
                    if self._carried_row is not None and resumes_its_own_run(trainer):
                        logger.add_row_if_missing(self._carried_row["step"], self._carried_row["metrics"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._trained_epoch = trainer.current_epoch

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reasons = [c.stop_reason for c in trainer.callbacks if getattr(c, "stop_reason", None)]
        adapter = run_dir(trainer) / ADAPTER_DIR
        self._write(trainer, "stopped" if reasons else "finished", reason="; ".join(reasons) or None,
                    adapter=str(adapter) if adapter.exists() else None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._fit_started:
            self._write(trainer, "failed", reason=f"{type(exception).__name__}: {exception}"[:500])
