"""`RunStatus`: `run.json` in the run directory says whether the run is running, finished, stopped early (and why)
or failed, at which step, and where its checkpoint and adapter are."""

import os
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from nextai.atomic import write_json
from nextai.loggers import RunCSVLogger
from nextai.rundir import ADAPTER_DIR, RUN_FILE, run_dir


class RunStatus(Callback):
    """Keeps `run.json` current (rank 0), and on a resume drops the metrics rows the resumed run trains again."""

    def __init__(self) -> None:
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._fit_started = False  # bad input fails before: then nothing is written into the run directory

    def _write(self, trainer: L.Trainer, state: str, **extra) -> None:
        if not trainer.is_global_zero:
            return
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", None) or None
        write_json(run_dir(trainer) / RUN_FILE, {
            "state": state, "step": trainer.global_step, "epoch": trainer.current_epoch, "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(), "resumed_from": trainer.ckpt_path,
            "checkpoint": checkpoint, **extra})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = True
        self._write(trainer, "running")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            for logger in trainer.loggers:
                if isinstance(logger, RunCSVLogger):
                    logger.drop_rows_from(trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reasons = [c.stop_reason for c in trainer.callbacks if getattr(c, "stop_reason", None)]
        adapter = run_dir(trainer) / ADAPTER_DIR
        self._write(trainer, "stopped" if reasons else "finished", reason="; ".join(reasons) or None,
                    adapter=str(adapter) if adapter.exists() else None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._fit_started:
            self._write(trainer, "failed", reason=f"{type(exception).__name__}: {exception}"[:500])
