"""Callbacks that read the trainer: peak memory, the wall-clock budget, token throughput, checkpoints, signals, the
run record, the progress bar and the end-of-run summary."""

from nextai.callbacks.budget import WallClockBudget
from nextai.callbacks.checkpoint import RunCheckpoint
from nextai.callbacks.epoch_position import EpochPosition
from nextai.callbacks.peak_memory import PeakMemoryMonitor
from nextai.callbacks.preemption import GracefulStop
from nextai.callbacks.progress import RunProgressBar
from nextai.callbacks.run_status import RunStatus
from nextai.callbacks.summary import RunSummary
from nextai.callbacks.throughput import TokenThroughput

__all__ = ["EpochPosition", "GracefulStop", "PeakMemoryMonitor", "RunCheckpoint", "RunProgressBar", "RunStatus",
           "RunSummary", "TokenThroughput", "WallClockBudget"]


def always_on_callbacks() -> list:
    """The callbacks every nextai trainer runs with, whatever the config lists (LightningCLI's trainer defaults).
    EpochPosition first: on a resumed run's first batch it sets the step the others log at."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    return [EpochPosition(), TokenThroughput(), LearningRateMonitor(logging_interval="step"), GracefulStop(),
            RunStatus(), RunSummary()]
