"""Where Lightning's fit loop stands, read from its progress counters (shared by the data module and callbacks)."""

import lightning as L


def between_epochs(trainer: L.Trainer) -> bool:
    """The current epoch's batches have all been trained and the next epoch has not started."""
    epochs = trainer.fit_loop.epoch_progress.current
    batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return epochs.started == epochs.completed and batches_done > 0 and (
        trainer.num_training_batches != float("inf") and batches_done >= trainer.num_training_batches)


def saved_batch_progress(checkpoint: dict) -> dict | None:
    """The fit loop's batch counters inside a checkpoint (None when it holds no fit loop)."""
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
