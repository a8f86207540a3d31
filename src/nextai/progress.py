"""Where Lightning's fit loop stands, read from its progress counters (shared by the data module and callbacks)."""

import lightning as L

from nextai.errors import NextaiError


def between_epochs(trainer: L.Trainer) -> bool:
    """The current epoch's batches have all been trained and the next epoch has not started."""
    epochs = trainer.fit_loop.epoch_progress.current
    batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return epochs.started == epochs.completed and batches_done > 0 and (
        trainer.num_training_batches != float("inf") and batches_done >= trainer.num_training_batches)


def saved_batch_progress(checkpoint: dict) -> dict | None:
    """The fit loop's batch counters inside a checkpoint (None when it holds no fit loop)."""
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")


def position_for_processes(batches_done: int, saved_processes: int, processes: int) -> int:
    """Micro batches each of `processes` processes has done, given that each of `saved_processes` did
    `batches_done`. Every process count cuts an epoch into the same plan and the processes take turns along it, so
    what was trained is the plan's first `batches_done x saved_processes` micro batches, whoever trained them."""
    trained = batches_done * saved_processes
    if trained % processes:
        raise NextaiError(f"the checkpoint is {batches_done} micro batches into its epoch on each of "
                          f"{saved_processes} process(es), {trained} in all, which {processes} processes cannot "
                          f"share evenly: resume with {saved_processes} process(es), or from a checkpoint at an "
                          f"epoch boundary")
    return trained // processes


def move_saved_epoch_position(checkpoint: dict, batches_done: int) -> None:
    """Set a checkpoint's count of micro batches done in its epoch (and the running totals) to `batches_done`,
    keeping the offsets between the counters (a save inside `on_train_batch_end` has processed one batch more than
    it completed)."""
    progress = saved_batch_progress(checkpoint)
    shift = batches_done - progress["current"]["processed"]
    for counts in (progress["current"], progress["total"]):
        for key in ("ready", "started", "processed", "completed"):
            counts[key] += shift
