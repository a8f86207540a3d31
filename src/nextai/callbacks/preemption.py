"""`GracefulStop`: SIGTERM (a cluster's preemption) or SIGINT (Ctrl-C) ends a run cleanly and resumably."""

import logging
import os
import signal
import sys
import threading

import lightning as L
from lightning.pytorch.callbacks import Callback

from nextai.callbacks.boundary import StepBoundary
from nextai.callbacks.stop import agreed, stop_run

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(Callback):
    """On the first SIGTERM or SIGINT, finish the optimizer step under way (never stopping inside an accumulation
    window), save a resumable checkpoint, write the adapter and return normally (exit status 0). A second signal
    ends the process at once. With several processes, one signalled process stops them all at the same step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.stop_reason: str | None = None
        self._previous: dict[int, object] = {}
        self._boundary = StepBoundary()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = name
            sys.stderr.write(f"nextai: {name} received: stopping after the current optimizer step with a checkpoint "
                             f"and the adapter ({name} again to exit at once)\n")
            return
        signal.signal(signum, signal.SIG_DFL)  # the second signal: the default action, now
        os.kill(os.getpid(), signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._boundary.start(trainer)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._boundary.passed(trainer):
            return  # inside an accumulation window
        if agreed(trainer, self.requested is not None) and not trainer.should_stop:
            self.stop_reason = f"{self.requested or 'a signal on another process'} received"
            stop_run(trainer, self.stop_reason, skip_validation=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
