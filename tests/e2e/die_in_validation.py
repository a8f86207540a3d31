"""A callback for fault-tolerance tests: the process kills itself (SIGKILL, like an OOM kill or a lost node) as
the validation after a given optimizer step starts."""

import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


class DieInValidation(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
