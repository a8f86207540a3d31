"""The loggers a run writes to: its own `metrics.csv` always, TensorBoard, W&B or MLflow beside it on request.

    nextai fit --config configs/tiny.yaml --trainer.logger tensorboard        # or wandb, mlflow, csv, a list of them

`RunCSVLogger` writes metrics.csv (and hparams.yaml) straight in the run directory and appends when the run is
resumed there (Lightning's CSVLogger deletes an existing metrics.csv, losing the loss curve so far);
`drop_rows_from(step)` removes the rows a resumed run is about to log again, `add_row_if_missing` restores a row
the checkpoint carried because the run died before writing it. The shorthand words name `TensorBoard`, `Wandb` and
`MLflow` (config_files.py rewrites them before parsing): their files go under the run directory unless the config
gives them a location, so `run_loggers` builds Lightning's logger once the run directory is known.
"""

import csv
import importlib
import logging
import os
from argparse import Namespace
from typing import Any, Literal

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from nextai.atomic import atomic_path
from nextai.errors import NextaiError
from nextai.rundir import METRICS_FILE, MLFLOW_DIR, TENSORBOARD_DIR

log = logging.getLogger(__name__)
HPARAMS_FILE = "hparams.yaml"


class RunCSVLogger(Logger):
    """CSV metrics in `save_dir/metrics.csv` (no name/version subdirectories), appended across resumes.

    The file is CSVLogger's: columns `epoch`, `step` and the metric names, sorted; a row per `log_metrics` call,
    written at each `save()` (Lightning saves after every logged row) and every 100 steps.
    """

    FLUSH_EVERY_N_STEPS = 100

    def __init__(self, save_dir: str) -> None:
        super().__init__()
        self._directory = os.fspath(save_dir)
        self._rows: list[dict[str, Any]] = []
        self._header: list[str] | None = None  # metrics.csv's columns as last read or written (None: read it)
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._directory

    @property
    def root_dir(self) -> str:
        return self._directory

    @property
    def log_dir(self) -> str:
        return self._directory

    @property
    def metrics_path(self) -> str:
        return os.path.join(self._directory, METRICS_FILE)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self._hparams.update(vars(params) if isinstance(params, Namespace) else dict(params or {}))
        os.makedirs(self._directory, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self._directory, HPARAMS_FILE), self._hparams)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {name: value.item() if hasattr(value, "item") else value for name, value in metrics.items()}
        row["step"] = len(self._rows) if step is None else step
        self._rows.append(row)
        if (row["step"] + 1) % self.FLUSH_EVERY_N_STEPS == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        """Append the rows logged since the last save; a new column rewrites the file under the wider header."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        if self._header is None:  # once per run, not at every logged row: appending needs the header alone
            self._header = read_header(self.metrics_path)
        new = set().union(*rows) - set(self._header)
        os.makedirs(self._directory, exist_ok=True)
        if new or not os.path.isfile(self.metrics_path):
            fields, written = read_metrics(self.metrics_path)
            self._header = sorted(set(fields).union(*rows))
            write_metrics(self.metrics_path, self._header, [*written, *rows])
            return
        with open(self.metrics_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._header).writerows(rows)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    @rank_zero_only
    def drop_rows_from(self, step: int) -> None:
        """Remove rows logged at `step` or later."""
        fields, rows = read_metrics(self.metrics_path)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) != len(rows):
            write_metrics(self.metrics_path, fields, kept)

    @rank_zero_only
    def add_row_if_missing(self, step: int, metrics: dict) -> None:
        """Log `metrics` at `step` unless metrics.csv already has them there (other callbacks write rows of their
        own at the same step number, so the step alone says nothing)."""
        keys = [k for k in metrics if k != "epoch"]
        _, rows = read_metrics(self.metrics_path)
        if any(r.get("step") and int(float(r["step"])) == step and all(r.get(k) for k in keys) for r in rows):
            return
        self.log_metrics(metrics, step=step)
        self.save()


def read_header(path: str) -> list[str]:
    """A metrics.csv's columns; none for a missing file."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def read_metrics(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """A metrics.csv's header and rows; none for a missing file."""
    if not os.path.isfile(path):
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def write_metrics(path: str, fields: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


class RunLogger(Logger):
    """A logger named in the config (`--trainer.logger tensorboard`) that is built once the run directory is known:
    `build(run_directory)` returns Lightning's own logger, its files in the run directory unless a location is
    given. Only `run_loggers` uses it; it logs nothing itself."""

    word = ""  # the shorthand and the pip extra (`pip install -e ".[word]"`)
    package = ""  # the module the logger imports

    def check_package(self) -> None:
        """A missing package is one line naming the extra that installs it (before anything is written)."""
        try:
            importlib.import_module(self.package)
        except ImportError:
            raise NextaiError(f"trainer.logger {self.word} needs the {self.package} package: "
                              f'pip install -e ".[{self.word}]"') from None

    def build(self, run_directory: str) -> Logger:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.word

    @property
    def version(self) -> str:
        return ""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        raise RuntimeError(f"{type(self).__name__} is built into Lightning's logger by nextai.loggers.run_loggers")

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{type(self).__name__} is built into Lightning's logger by nextai.loggers.run_loggers")


class TensorBoard(RunLogger):
    """TensorBoard event files in `save_dir` (default: `tensorboard/` in the run directory), continued on resume."""

    word = package = "tensorboard"

    def __init__(self, save_dir: str | None = None, log_graph: bool = False, default_hp_metric: bool = True,
                 prefix: str = "") -> None:
        super().__init__()
        self.save_dir_given = save_dir
        self.options = {"log_graph": log_graph, "default_hp_metric": default_hp_metric, "prefix": prefix}

    def build(self, run_directory: str) -> Logger:
        from lightning.pytorch.loggers import TensorBoardLogger

        save_dir = self.save_dir_given or os.path.join(run_directory, TENSORBOARD_DIR)
        return TensorBoardLogger(save_dir=save_dir, name="", version="", **self.options)


class Wandb(RunLogger):
    """Weights & Biases: its `wandb/` folder (each run's record of metrics and config, files, logs) in `save_dir`
    (default: the run directory). `WANDB_MODE=offline` or `offline: true` runs without an account; `wandb sync` uploads."""

    word = package = "wandb"

    def __init__(self, save_dir: str | None = None, project: str | None = None, name: str | None = None,
                 id: str | None = None, entity: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, offline: bool = False,
                 log_model: Literal["all"] | bool = False, prefix: str = "") -> None:
        super().__init__()
        self.save_dir_given = save_dir
        self.options = {"project": project, "name": name, "id": id, "offline": offline, "log_model": log_model,
                        "prefix": prefix}
        self.init_options = {k: v for k, v in {"entity": entity, "group": group, "tags": tags}.items() if v}

    def build(self, run_directory: str) -> Logger:
        from lightning.pytorch.loggers import WandbLogger

        save_dir = self.save_dir_given or run_directory
        os.makedirs(save_dir, exist_ok=True)  # the run directory may not exist yet: wandb needs its `dir`
        return WandbLogger(save_dir=save_dir, **self.options, **self.init_options)


class MLflow(RunLogger):
    """MLflow: a file store in `save_dir` (default: `mlruns/` in the run directory), or the server or store
    `tracking_uri` (or `MLFLOW_TRACKING_URI`) names."""

    word = package = "mlflow"

    def __init__(self, save_dir: str | None = None, tracking_uri: str | None = None,
                 experiment_name: str = "lightning_logs", run_name: str | None = None,
                 tags: dict[str, Any] | None = None, log_model: Literal["all"] | bool = False,
                 prefix: str = "", run_id: str | None = None) -> None:
        super().__init__()
        self.save_dir_given = save_dir
        self.tracking_uri = tracking_uri
        self.options = {"experiment_name": experiment_name, "run_name": run_name, "tags": tags,
                        "log_model": log_model, "prefix": prefix, "run_id": run_id}

    def build(self, run_directory: str) -> Logger:
        from lightning.pytorch.loggers import MLFlowLogger

        uri = self.tracking_uri or (None if self.save_dir_given else os.environ.get("MLFLOW_TRACKING_URI"))
        if not uri:
            uri = "file:" + os.path.abspath(self.save_dir_given or os.path.join(run_directory, MLFLOW_DIR))
            # MLflow 3 refuses its file store unless this says otherwise, and mlflow-skinny has no SQLite store.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return MLFlowLogger(tracking_uri=uri, **self.options)


# The one-word values of `trainer.logger`: a class here, or None for the run's own CSV alone.
SHORTHANDS: dict[str, str | None] = {
    "csv": None,
    "tensorboard": f"{__name__}.TensorBoard",
    "wandb": f"{__name__}.Wandb",
    "mlflow": f"{__name__}.MLflow",
}


def run_loggers(run_directory: str, configured) -> list[Logger] | Literal[False]:
    """The loggers a command runs with: the run's own CSV logger in `run_directory`, first (Lightning puts
    config.yaml and the checkpoints where the first logger says), then the configured ones (`trainer.logger`), the
    shorthand ones built into `run_directory`; `false` turns logging off."""
    if configured is False:
        return False
    if configured in (None, True):
        extra = []
    else:
        extra = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    for logger in extra:
        if isinstance(logger, RunLogger):
            logger.check_package()
    loggers: list[Logger] = [RunCSVLogger(save_dir=run_directory)]
    for logger in extra:
        if isinstance(logger, RunLogger):
            logger = logger.build(run_directory)
            log.info("logger: %s beside metrics.csv, into %s", type(logger).__name__,
                     logger.save_dir or "its tracking server")
        loggers.append(logger)
    return loggers
