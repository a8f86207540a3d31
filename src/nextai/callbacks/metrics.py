"""Writing a callback's own measurements straight to the trainer's loggers, at the step they belong to."""

import lightning as L


def log_metrics(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Unlike `LightningModule.log` this does not depend on Lightning's logging cadence: a value measured over a
    window of steps is written once, at the step that closes the window."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
