"""`RunSummary`: when `fit` ends — finished, or stopped by the budget or a signal — a table of how the run went
(losses, tokens/s, peak memory, time of the budget, why it stopped, where its checkpoint and adapter are) and the
commands to run next."""

import json
import os
import shlex
import time
from dataclasses import dataclass, field

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nextai.callbacks.budget import WallClockBudget
from nextai.callbacks.progress import RunProgressBar
from nextai.rundir import ADAPTER_DIR, PEAK_MEMORY_FILE, run_dir
from nextai.units import format_duration


@dataclass
class RunReport:
    """What the summary shows; every field that could not be known is None (shown as `-`)."""

    run_dir: str
    step: int
    total_steps: int | None
    epoch: int | None  # the epoch of the last trained batch
    stopped: bool
    reason: str
    train_loss: float | None = None
    val_loss: float | None = None
    val_step: int | None = None  # the step of the validation that gave val_loss
    tokens_per_sec: float | None = None
    peak_memory: str | None = None
    budget_used: str | None = None
    checkpoint: str | None = None
    adapter: str | None = None
    next_commands: list[str] = field(default_factory=list)


def next_commands(configs: list[str], root: str, stopped: bool) -> list[str]:
    """What to run next on this run directory, with the user's own configs: resume (when stopped early), chat,
    evaluate."""
    base = " ".join(f"--config {shlex.quote(c)}" for c in configs) + f" --trainer.default_root_dir {shlex.quote(root)}"
    commands = [f"nextai fit {base} --ckpt_path last"] if stopped else []
    return [*commands, f"nextai chat {base}", f"nextai evaluate {base}"]


def peak_memory_text(report: dict) -> str | None:
    """`peak_memory.json`'s run peak in one line: reserved and allocated GPU memory, or the CPU process's RSS."""
    peak = report.get("run_peak") or {}
    if "peak_reserved_gib" in peak:
        return (f"{peak['peak_reserved_gib']:.2f} GiB reserved, {peak.get('peak_allocated_gib', 0):.2f} GiB allocated "
                f"({report.get('device_name', 'GPU')})")
    if "cpu_peak_rss_gib" in peak:
        return f"{peak['cpu_peak_rss_gib']:.2f} GiB peak RSS (CPU run)"
    return None


def finished_reason(trainer: L.Trainer) -> str:
    """Why a run that no callback stopped ended."""
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return f"finished: trainer.max_steps {trainer.max_steps} reached"
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return f"finished: trainer.max_epochs {trainer.max_epochs} done"
    return "finished"


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(report: RunReport):
    """The summary as a rich Table."""
    from rich.table import Table

    title = "Run stopped early" if report.stopped else "Run finished"
    table = Table(title=f"{title}: {report.run_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    steps = (f"{report.step}" + (f" of {report.total_steps}" if report.total_steps else "")
             + (f" (epoch {report.epoch})" if report.epoch is not None else ""))
    validation = _number(report.val_loss) + (f" (step {report.val_step})" if report.val_step is not None else "")
    for name, value in [
        ("stopped because" if report.stopped else "ended", report.reason),
        ("steps", steps),
        ("final train loss", _number(report.train_loss)),
        ("final validation loss", validation),
        ("tokens/s", "-" if report.tokens_per_sec is None else f"{report.tokens_per_sec:,.0f} (training time)"),
        ("peak memory", report.peak_memory or "-"),
        ("budget used", report.budget_used or "-"),
        ("checkpoint", report.checkpoint or "-"),
        ("adapter", report.adapter or "-"),
    ]:
        table.add_row(name, value)
    return table


def print_summary(report: RunReport, console=None) -> None:
    """The table, then the next commands each on one unbroken line (to copy); on standard output by default."""
    from rich.console import Console

    console = console or Console()
    console.print(summary_table(report))
    console.print("next:", style="bold")
    for command in report.next_commands:
        console.print(f"  {command}", soft_wrap=True, highlight=False, markup=False)


def given_configs(trainer: L.Trainer) -> list[str] | None:
    """The config files the run was started with, as LightningCLI's SaveConfigCallback holds them; None when one
    was not a file (a config that `extends` another reaches LightningCLI as a chain of texts)."""
    from lightning.pytorch.cli import SaveConfigCallback

    saver = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
    if saver is None:
        return None
    configs = [str(c) for c in (saver.config.get("config") or []) if c is not None]
    if not configs or not all(os.path.isfile(c) for c in configs):
        return None
    return configs


class RunSummary(Callback):
    """Prints the run's summary on rank 0 when fit ends (after the progress bar stops drawing). Tokens/s is the
    run's mean: real (non-pad) tokens of every process over training time, validation left out, as
    `TokenThroughput` counts them per window."""

    def __init__(self) -> None:
        self._tokens = 0
        self._train_s = 0.0
        self._started: float | None = None
        self._paused_at: float | None = None
        self._val_step: int | None = None
        self._epoch: int | None = None

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._tokens += int(batch.get("num_tokens", 0)) if isinstance(batch, dict) else 0
        self._epoch = trainer.current_epoch  # after fit Lightning has moved it on to an epoch never begun

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_step = trainer.global_step
        if self._started is not None and self._paused_at is not None:
            self._started += time.perf_counter() - self._paused_at  # validation time is not training time
        self._paused_at = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self._sync(trainer)
            self._train_s = time.perf_counter() - self._started

    def report(self, trainer: L.Trainer) -> RunReport:
        reasons = [c.stop_reason for c in trainer.callbacks if getattr(c, "stop_reason", None)]
        metrics = trainer.callback_metrics
        root = run_dir(trainer)
        peak_file = root / PEAK_MEMORY_FILE
        budget = next((c for c in trainer.callbacks if isinstance(c, WallClockBudget)), None)
        adapter = root / ADAPTER_DIR
        total = trainer.estimated_stepping_batches if trainer.num_training_batches else None
        configs = given_configs(trainer) or [str(root / "config.yaml")]
        return RunReport(
            run_dir=str(root), step=trainer.global_step,
            total_steps=int(total) if total not in (None, float("inf")) else None, epoch=self._epoch,
            stopped=bool(reasons), reason="; ".join(reasons) or finished_reason(trainer),
            train_loss=float(metrics["train_loss"]) if "train_loss" in metrics else None,
            val_loss=float(metrics["val_loss"]) if "val_loss" in metrics else None,
            val_step=self._val_step if "val_loss" in metrics else None,
            tokens_per_sec=self._tokens * trainer.world_size / self._train_s if self._tokens and self._train_s else None,
            peak_memory=peak_memory_text(json.loads(peak_file.read_text())) if peak_file.is_file() else None,
            budget_used=(f"{format_duration(budget.elapsed_s())} of {budget.budget}" if budget is not None else None),
            checkpoint=getattr(trainer.checkpoint_callback, "last_model_path", None) or None,
            adapter=str(adapter) if adapter.exists() else None,
            next_commands=next_commands(configs, str(trainer.default_root_dir), bool(reasons)),
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if isinstance(trainer.progress_bar_callback, RunProgressBar):
            trainer.progress_bar_callback.finish()
        print_summary(self.report(trainer))
