"""`EpochEndResume`: a checkpoint written after the last batch of an epoch resumes at the start of the next one.

Lightning counts the epoch as over once its last batch ran (`trainer.current_epoch` moves on), but the batch
counters of that epoch stay full until the next epoch starts. A checkpoint written in between (the final save
after `max_steps`, a stop on the last batch) would resume "epoch E+1, N batches already done": Lightning then
trains nothing in epoch E+1, and a resumable sampler skips all of it. The batch counters of such a checkpoint are
those of an epoch not yet begun, which is what it is.
"""

import lightning as L
from lightning.pytorch.callbacks import Callback

from nextai.progress import between_epochs, saved_batch_progress


class EpochEndResume(Callback):
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        progress = saved_batch_progress(checkpoint)
        if progress is not None and between_epochs(trainer):
            progress["current"] = {key: 0 for key in progress["current"]}
            progress["is_last_batch"] = False
