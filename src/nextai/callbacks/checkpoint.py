"""`RunCheckpoint`: Lightning's ModelCheckpoint keeping the newest checkpoints, and always the final state as
`last.ckpt`, so every run ends resumable."""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from nextai.errors import NextaiError
from nextai.internals import defer_save_until_validation, save_due, save_last, saved_at_step, validation_follows
from nextai.rundir import CHECKPOINT_DIR, run_dir


class RunCheckpoint(ModelCheckpoint):
    """Saves every `every_n_train_steps` optimizer steps and keeps the `keep_last_n` newest; `last.ckpt` is written
    at every save, at the end of fit and when a run stops early (budget, signal), overwritten in place so that
    `--ckpt_path last` finds it. A new checkpoint is complete on disk (see `AtomicCheckpointIO`) before an old one
    is deleted, so retention never removes the only good checkpoint.

    A save that falls on a batch after which validation runs is written when that validation ends, through
    ModelCheckpoint's own deferral (`_defer_save_until_validation`, its own for a metric only validation logs):
    Lightning resumes a checkpoint saved at the batch as if its validation had run, so a run killed during that
    validation would never have it. Killed then, the run resumes from the previous checkpoint and validates again.

    Checkpoints hold only what training changes (see `QLoRAModule.on_save_checkpoint`): megabytes at 70B.
    """

    def __init__(self, every_n_train_steps: int = 200, keep_last_n: int = 2, dirpath: str | None = None,
                 filename: str | None = None) -> None:
        if keep_last_n < 1:
            raise NextaiError(f"RunCheckpoint.keep_last_n must be at least 1, got {keep_last_n}")
        if every_n_train_steps < 1:
            raise NextaiError(f"RunCheckpoint.every_n_train_steps must be at least 1, got {every_n_train_steps}")
        super().__init__(dirpath=dirpath, filename=filename, monitor="step", mode="max", save_top_k=keep_last_n,
                         every_n_train_steps=every_n_train_steps, save_last=True, enable_version_counter=False,
                         save_on_train_epoch_end=False)  # so that a deferred save is written at validation's end

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            # Always `<run dir>/checkpoints`, whichever logger runs (TensorBoard's would put them in a new version
            # directory at every resume, where `--ckpt_path last` could not find them).
            self.dirpath = str(run_dir(trainer) / CHECKPOINT_DIR)
        super().setup(trainer, pl_module, stage)

    def save_last_now(self, trainer: L.Trainer) -> None:
        """Write `last.ckpt` for the current step unless this step is already saved."""
        if trainer.global_step != saved_at_step(self):
            save_last(self, trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if save_due(self, trainer) and validation_follows(trainer):
            defer_save_until_validation(self)
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_last_now(trainer)
