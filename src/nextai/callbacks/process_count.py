"""`ProcessCountResume`: a checkpoint from inside an epoch resumes on another number of processes.

Lightning counts the micro batches of an epoch per process. Every process count cuts an epoch into the same plan
of micro batches and the processes take turns along it, so "N done on each of P processes" is "N x P done" of the
plan: on P' processes, N x P / P' each. The data module moves its sampler by that rule; this moves Lightning's
counters (its validation schedule and epoch end read them) before they are restored.
"""

import lightning as L
from lightning.pytorch.callbacks import Callback

from nextai.progress import move_saved_epoch_position, position_for_processes, saved_batch_progress

PROCESSES_KEY = "nextai_processes"


class ProcessCountResume(Callback):
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[PROCESSES_KEY] = trainer.world_size

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        saved, progress = checkpoint.get(PROCESSES_KEY), saved_batch_progress(checkpoint)
        if saved is None or progress is None or saved == trainer.world_size:
            return
        done = progress["current"]["processed"]
        if done:
            move_saved_epoch_position(checkpoint, position_for_processes(done, saved, trainer.world_size))
