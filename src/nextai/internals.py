"""Every use of Lightning's (and torch's) private names, in one place.

nextai's exact resume and its step-aligned logging need a few things Lightning keeps private: the logging step
counter, the logger connector's pending row, whether validation follows the current batch, ModelCheckpoint's save
bookkeeping, and the layout of the fit loop's state inside a checkpoint. Each is read or written here through a
named function, and `PRIVATE_NAMES` lists them, so an upgrade that removes one fails one test
(`tests/unit/test_internals.py`) naming it, instead of breaking a resume somewhere later. Only the `lightning<2.7`
pin holds them stable otherwise.
"""

import torch

# (object path as the test finds it, attribute): every private name this module touches.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("trainer.fit_loop.epoch_loop", "_batches_that_stepped"),
    ("trainer.fit_loop.epoch_loop", "_should_check_val_fx"),
    ("trainer.fit_loop", "_data_fetcher"),
    ("trainer.fit_loop", "_should_accumulate"),
    ("trainer", "_logger_connector"),
    ("trainer", "_val_check_time_interval"),
    ("model_checkpoint", "_defer_save_until_validation"),
    ("model_checkpoint", "_last_global_step_saved"),
    ("model_checkpoint", "_save_last_checkpoint"),
    ("model_checkpoint", "_monitor_candidates"),
    ("model_checkpoint", "_every_n_train_steps"),
    ("model_checkpoint", "_should_skip_saving_checkpoint"),
    ("lightning_module", "_trainer"),
    ("torch.distributed.fsdp._runtime_utils", "_lazy_init"),
)


# ------------------------------------------------------------------------------------------ the fit loop
def logging_step(trainer) -> int:
    """The step Lightning logs at: its count of optimizer steps taken (at a batch start, `global_step`)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_logging_step(trainer, step: int) -> None:
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def batches_done_in_epoch(trainer) -> int:
    """Micro batches of the current epoch this process has trained."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def between_epochs(trainer) -> bool:
    """The current epoch's batches have all been trained and the next epoch has not started."""
    epochs = trainer.fit_loop.epoch_progress.current
    done = batches_done_in_epoch(trainer)
    return epochs.started == epochs.completed and done > 0 and (
        trainer.num_training_batches != float("inf") and done >= trainer.num_training_batches)


def pending_step_row(trainer) -> dict | None:
    """The row Lightning will log for the current batch once `on_train_batch_end` returns, as `{"step", "metrics"}`
    the way its logger connector builds them (`update_train_step_metrics`, `log_metrics`). None outside that window
    (the batch's counters show it: processed, not yet completed) and on batches that log nothing."""
    from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

    batches = trainer.fit_loop.epoch_loop.batch_progress.current
    connector = trainer._logger_connector
    if (not trainer.training or batches.processed <= batches.completed or trainer.fit_loop._should_accumulate()
            or not connector.should_update_logs):
        return None
    metrics = convert_tensors_to_scalars(connector.metrics["log"])
    if not metrics:
        return None
    step = metrics.pop("step", None)
    if step is None:
        metrics.setdefault("epoch", trainer.current_epoch)
        step = logging_step(trainer)
    return {"step": int(step), "metrics": metrics}


def validation_follows(trainer) -> bool:
    """Validation runs right after the current training batch: Lightning's own decision, taken again (it is taken
    after `on_train_batch_end`), and at least one validation batch to run."""
    batches = trainer.num_val_batches
    if not (sum(batches) if isinstance(batches, list) else batches) or trainer._val_check_time_interval is not None:
        return False  # nothing to validate, or a decision by the clock that could differ a moment later
    fit_loop = trainer.fit_loop
    return fit_loop.epoch_loop._should_check_val_fx(fit_loop._data_fetcher)


def replay_epoch_start_draw() -> None:
    """The draw Lightning's training DataLoader makes from torch's global generator at an epoch's start (one int64
    for its base seed), made again where a resume between two epochs skips it (`on_train_epoch_start` does not run
    on such a restart), so the next dropout masks are those of the uninterrupted run."""
    torch.empty((), dtype=torch.int64).random_()


def attached_trainer(module):
    """The module's Trainer, or None outside one (the public property raises then)."""
    return module._trainer


# ------------------------------------------------------------------------------------------ checkpoints
def saved_batch_progress(checkpoint: dict) -> dict | None:
    """The fit loop's batch counters inside a checkpoint (None when it holds no fit loop)."""
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")


def mark_saved_between_epochs(checkpoint: dict) -> None:
    """Give a checkpoint written between two epochs the batch counters of an epoch not yet begun."""
    progress = saved_batch_progress(checkpoint)
    if progress is not None:
        progress["current"] = {key: 0 for key in progress["current"]}
        progress["is_last_batch"] = False


def move_saved_epoch_position(checkpoint: dict, batches_done: int) -> None:
    """Set a checkpoint's count of micro batches done in its epoch (and the running totals) to `batches_done`,
    keeping the offsets between the counters (a save inside `on_train_batch_end` has processed one batch more than
    it completed)."""
    progress = saved_batch_progress(checkpoint)
    shift = batches_done - progress["current"]["processed"]
    for counts in (progress["current"], progress["total"]):
        for key in ("ready", "started", "processed", "completed"):
            counts[key] += shift


# ------------------------------------------------------------------------------------------ ModelCheckpoint
def defer_save_until_validation(callback) -> None:
    """ModelCheckpoint writes the pending save when validation ends (its own deferral for validation metrics)."""
    callback._defer_save_until_validation = True


def saved_at_step(callback) -> int | None:
    return callback._last_global_step_saved


def save_last(callback, trainer) -> None:
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def save_due(callback, trainer) -> bool:
    """ModelCheckpoint would save at this step (every `every_n_train_steps`, unless it skips this one)."""
    return (trainer.global_step % callback._every_n_train_steps == 0
            and not callback._should_skip_saving_checkpoint(trainer))


# ------------------------------------------------------------------------------------------ torch FSDP
def initialise_fsdp_root(root) -> None:
    """FSDP's lazy initialisation of the root unit, as its own state-dict hooks run it: a checkpoint can be read
    before the first forward pass, and a unit used on its own before that would take itself for the root."""
    from torch.distributed.fsdp._runtime_utils import _lazy_init

    _lazy_init(root, root)
