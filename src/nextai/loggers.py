"""`RunCSVLogger`: metrics.csv straight in the run directory, kept when the run is resumed there.

Lightning's CSVLogger deletes an existing metrics.csv when its directory is not empty, so resuming a run into its
own directory would lose the loss curve so far. This one appends; `drop_rows_from(step)` removes the rows a resumed
run is about to log again (those written after the checkpoint it resumes from), and `add_row_if_missing` restores
a row the checkpoint carried because the run died before writing it.
"""

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from nextai.atomic import atomic_path


class _KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """CSV metrics in `save_dir/metrics.csv` (no name/version subdirectories), appended across resumes."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_rows_from(self, step: int) -> None:
        """Remove rows logged at `step` or later."""
        path = os.path.join(self.log_dir, "metrics.csv")
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) == len(rows):
            return
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)

    def add_row_if_missing(self, step: int, metrics: dict) -> None:
        """Log `metrics` at `step` unless metrics.csv already has them there (other callbacks write rows of their
        own at the same step number, so the step alone says nothing)."""
        path = os.path.join(self.log_dir, "metrics.csv")
        keys = [k for k in metrics if k != "epoch"]
        if os.path.isfile(path):
            with open(path, newline="") as f:
                if any(r.get("step") and int(float(r["step"])) == step and all(r.get(k) for k in keys)
                       for r in csv.DictReader(f)):
                    return
        self.log_metrics(metrics, step=step)
        self.save()


def run_loggers(run_directory: str, configured):
    """The loggers a command runs with: the run's own CSV logger in `run_directory` unless the config names
    loggers (`trainer.logger`; `false` turns logging off)."""
    if configured in (None, True):
        return RunCSVLogger(save_dir=run_directory)
    return configured
