"""Stopping a run cleanly at an optimizer-step boundary: one decision for every process, a resumable checkpoint,
no validation that would not fit; the adapter is then written by the module at the end of fit."""

import logging

import lightning as L

from nextai.callbacks.checkpoint import RunCheckpoint
from nextai.rundir import CHECKPOINT_DIR, run_dir

log = logging.getLogger(__name__)  # nextai's logger: INFO on rank 0 only (nextai.quiet)

STOP_CHECKPOINT = "last.ckpt"  # without a RunCheckpoint; `--ckpt_path last` picks the newest last*.ckpt


def agreed(trainer: L.Trainer, wish: bool) -> bool:
    """True on every process when any process wishes it (one collective; a no-op on one process)."""
    return bool(trainer.strategy.reduce_boolean_decision(wish, all=False))


def stop_run(trainer: L.Trainer, reason: str, skip_validation: bool, save: bool = True) -> str | None:
    """Stop after the current optimizer step: save `last.ckpt` (through the RunCheckpoint when there is one, so its
    bookkeeping stays right) and say why. Returns the checkpoint path."""
    trainer.should_stop = True
    if skip_validation:
        trainer.limit_val_batches = 0  # Lightning validates when should_stop is set; this one would not fit
        reason += "; the final validation is skipped"
    log.info("stopping at step %d: %s", trainer.global_step, reason)
    if not save:
        return None
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, RunCheckpoint):
        checkpoint.save_last_now(trainer)
        path = checkpoint.last_model_path
    else:
        path = str(run_dir(trainer) / CHECKPOINT_DIR / STOP_CHECKPOINT)
        trainer.save_checkpoint(path)
    log.info("resumable checkpoint: %s (resume with --ckpt_path last)", path)
    return path
