"""`EpochPosition`: a checkpoint's place inside its epoch, as Lightning's batch counters hold it, made right for the
run that resumes from it.

- **Between two epochs.** Lightning counts the epoch as over once its last batch ran (`trainer.current_epoch`
  moves on), but that epoch's batch counters stay full until the next epoch starts. A checkpoint written in
  between (the final save after `max_steps`, a stop on the last batch) would resume "epoch E+1, N batches already
  done": Lightning would then train nothing in epoch E+1, and a resumable sampler would skip all of it. Such a
  checkpoint gets the counters of an epoch not yet begun, which is what it is.
- **Another process count.** Lightning counts an epoch's micro batches per process. Every process count cuts an
  epoch into the same plan of micro batches and the processes take turns along it, so "N done on each of P
  processes" is the plan's first N x P: on P' processes, N x P / P' each. The data module moves its sampler by
  that rule; this moves Lightning's counters (its validation schedule and epoch end read them) before they are
  restored.
- **The logging step.** Lightning logs at its count of optimizer steps taken (`_batches_that_stepped`), which at
  every batch start equals `global_step`. A resume from a checkpoint written after that count was raised (the
  final save at an epoch's end, or where validation ran) raises it once more, so every row after it would be logged
  one step late; the first batch of a resumed run sets it back. The CLI lists this callback before its other
  callbacks, so that the learning-rate monitor, which logs at batch start, logs after it.
"""

import lightning as L
from lightning.pytorch.callbacks import Callback

from nextai.data.sampler import position_for_processes
from nextai.internals import (between_epochs, mark_saved_between_epochs, move_saved_epoch_position,
                              saved_batch_progress, set_logging_step)

PROCESSES_KEY = "nextai_processes"


class EpochPosition(Callback):
    moves_epoch_position = True  # what the data module looks for before resuming on another process count

    def __init__(self) -> None:
        self._resumed = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[PROCESSES_KEY] = trainer.world_size
        if between_epochs(trainer):
            mark_saved_between_epochs(checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        saved, progress = checkpoint.get(PROCESSES_KEY), saved_batch_progress(checkpoint)
        if saved is None or progress is None or saved == trainer.world_size:
            return
        done = progress["current"]["processed"]
        if done:
            move_saved_epoch_position(checkpoint, position_for_processes(done, saved, trainer.world_size))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resumed = trainer.ckpt_path is not None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._resumed:
            self._resumed = False
            set_logging_step(trainer, trainer.global_step)
