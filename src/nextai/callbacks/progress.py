"""`RunProgressBar`: Lightning's rich progress bar counting the optimizer steps this run will really train, with the
wall-clock budget's time left and the run's estimated end beside it."""

import logging
import math
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import CustomBarColumn
from rich.progress import ProgressColumn, TextColumn
from rich.text import Text

from nextai.callbacks.budget import BudgetEstimate, WallClockBudget
from nextai.units import format_duration


def last_epoch(total_steps: int, steps_per_epoch: int | float, max_epochs: int | None) -> int | None:
    """The last epoch a run of `total_steps` optimizer steps reaches (None when unknown: endless epochs or
    unbounded training)."""
    if not steps_per_epoch or steps_per_epoch == float("inf") or total_steps in (None, float("inf")):
        return None if max_epochs in (None, -1) else max_epochs - 1
    reached = max(math.ceil(total_steps / steps_per_epoch) - 1, 0)
    return reached if max_epochs in (None, -1) else min(reached, max_epochs - 1)


def clock_time(seconds_from_now: float, now: float | None = None) -> str:
    """Wall-clock time `seconds_from_now` ahead: `14:32`, with the day when it is not today (`Tue 09:05`)."""
    now = time.time() if now is None else now
    then = time.localtime(now + seconds_from_now)
    return time.strftime("%H:%M" if then.tm_yday == time.localtime(now).tm_yday else "%a %H:%M", then)


def budget_text(estimate: BudgetEstimate, now: float | None = None) -> str:
    """The bar's budget column: when the run ends (or that the budget stops it first, and near which step), and the
    budget's time left."""
    left = f"budget {format_duration(max(estimate.remaining_s, 0))} left of {estimate.budget}"
    if estimate.finish_s is None:
        return f"{left} · ETA after the first step"
    if estimate.budget_stops_it:
        return (f"budget stops it near step {estimate.stop_step}/{estimate.total_steps} at "
                f"~{clock_time(estimate.remaining_s, now)} · {left}")
    to_go = max(estimate.finish_s - estimate.elapsed_s, 0)
    return f"ETA {clock_time(to_go, now)} (in {format_duration(to_go)}) · {left}"


class StepsColumn(ProgressColumn):
    """`step 3/12` on the training bar (optimizer steps), `3/8` batches on the validation bar."""

    def render(self, task) -> Text:
        total = "--" if task.total in (None, float("inf")) else int(task.total)
        unit = task.fields.get("unit")
        return Text(f"{unit} {int(task.completed)}/{total}" if unit else f"{int(task.completed)}/{total}",
                    style="grey70")


class StepTimeColumn(ProgressColumn):
    """Elapsed time, and seconds per optimizer step on the training bar (steps are seconds long, not milliseconds)."""

    max_refresh = 0.5

    def render(self, task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        text = format_duration(elapsed or 0)
        if task.fields.get("unit") and task.speed:
            text += f" · {1 / task.speed:.2f}s/step"
        return Text(text, style="grey54")


class FieldColumn(ProgressColumn):
    """A task's own text field, empty on tasks that have none (Lightning's validation bars)."""

    def __init__(self, field: str, style: str = "") -> None:
        self.field = field
        self.style = style
        super().__init__()

    def render(self, task) -> Text:
        return Text(str(task.fields.get(self.field, "")), style=self.style)


class RunProgressBar(RichProgressBar):
    """The training bar spans the run in optimizer steps: `trainer.estimated_stepping_batches`, whichever of
    `max_steps`, `max_epochs` and the epochs' micro batches (over `accumulate_grad_batches`) ends it first, where
    Lightning's bar counts one epoch's micro batches even when `max_steps` ends the run after a few. Inside an
    accumulation window it moves by a fraction of a step per micro batch. Beside it: seconds per step, the
    `WallClockBudget`'s estimated end and time left, or the step near which the budget will stop the run.

    It draws on standard error (where nextai logs; standard output keeps results). Log lines print above it: while
    it is live, nextai's rich log handler prints through the bar's console, and logging handlers that hold the
    terminal's stream from before (a library's, made at import) write through rich's redirect instead.
    """

    def __init__(self, refresh_rate: int = 10, console_kwargs: dict | None = None) -> None:
        """refresh_rate: redraws per second (0 turns the bar off); console_kwargs: rich's `reconfigure` of the global
        console the bar draws on (default: `{stderr: true}`)."""
        super().__init__(refresh_rate=refresh_rate,
                         console_kwargs={"stderr": True} if console_kwargs is None else console_kwargs)
        self._budget: WallClockBudget | None = None
        self._window_step = 0  # the optimizer step count when the current accumulation window began
        self._window_batches = 0  # micro batches trained in it
        self._rerouted: list[tuple[logging.Handler, str, object]] = []  # (handler, attribute, its own value)

    # ----------------------------------------------------------------------------------- what the bar counts
    @property
    def total_train_batches(self) -> int | float:
        """Optimizer steps this run trains in all (not one epoch's micro batches)."""
        return self.trainer.estimated_stepping_batches

    def steps_per_epoch(self) -> int | float:
        batches = self.trainer.num_training_batches
        return batches if batches == float("inf") else math.ceil(batches / max(self.trainer.accumulate_grad_batches, 1))

    def train_description(self, trainer: L.Trainer) -> str:
        last = last_epoch(self.total_train_batches, self.steps_per_epoch(), trainer.max_epochs)
        text = f"Epoch {trainer.current_epoch}" + ("" if last is None else f"/{last}")
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": no flicker between them

    def budget_text(self, trainer: L.Trainer) -> str:
        if self._budget is None:
            self._budget = next((c for c in trainer.callbacks if isinstance(c, WallClockBudget)), None)
        return "" if self._budget is None else budget_text(self._budget.estimate(trainer))

    def configure_columns(self, trainer: L.Trainer) -> list:
        return [
            TextColumn("[progress.description]{task.description}"),
            CustomBarColumn(complete_style=self.theme.progress_bar, finished_style=self.theme.progress_bar_finished,
                            pulse_style=self.theme.progress_bar_pulse),
            StepsColumn(),
            StepTimeColumn(),
            FieldColumn("budget", style="cyan"),
        ]

    # ----------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._window_step, self._window_batches = trainer.global_step, 0
        self._print_logs_above()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_start(trainer, pl_module)
        self._print_logs_above()

    def _add_train_task(self, trainer: L.Trainer) -> None:
        self.train_progress_bar_id = self.progress.add_task(
            self.train_description(trainer), total=self.total_train_batches, completed=trainer.global_step,
            unit="step", budget=self.budget_text(trainer))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self._add_train_task(trainer)
        else:  # one bar for the whole run: a new epoch only renames it
            self.progress.update(self.train_progress_bar_id, description=self.train_description(trainer),
                                 total=self.total_train_batches, visible=True)
        self.refresh()

    def _show_budget(self, trainer: L.Trainer) -> None:
        if not self.is_disabled and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, budget=self.budget_text(trainer))

    # The budget measures a step in its own on_train_batch_end, after this bar's (it comes later in the callbacks):
    # the bar shows it at the next batch's start, after a validation and when training ends.
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        self._show_budget(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._show_budget(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show_budget(trainer)
        self.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # a resume that skips on_train_epoch_start
            self._add_train_task(trainer)
        if trainer.global_step != self._window_step:  # this batch ended a window
            self._window_step, self._window_batches = trainer.global_step, 0
        else:
            self._window_batches += 1
        accumulate = max(trainer.accumulate_grad_batches, 1)
        done = trainer.global_step + min(self._window_batches / accumulate, (accumulate - 1) / accumulate)
        self._show_budget(trainer)
        # Lightning's own update (metrics, refresh) sets the bar to `batch_idx + 1`: give it the steps done.
        super().on_train_batch_end(trainer, pl_module, outputs, batch, done - 1)

    def finish(self) -> None:
        """Stop drawing now (the last state stays on screen), so what follows prints below the bar."""
        if self.progress is not None:
            self.progress.stop()
        self._restore_log_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._restore_log_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_log_handlers()

    # ----------------------------------------------------------------------------------- log lines above the bar
    def _print_logs_above(self) -> None:
        """Point the log handlers that would write past the live bar at it: rich handlers at its console (rich
        prints above a live display only for lines of its own console), plain stream handlers at rich's redirect
        of `sys.stdout`/`sys.stderr` (a handler made before holds the terminal's stream itself)."""
        if self.progress is None or not self.progress.live.is_started:
            return
        from rich.logging import RichHandler

        console = self.progress.console
        redirected = {id(getattr(s, "rich_proxied_file")): s for s in (sys.stdout, sys.stderr)
                      if hasattr(s, "rich_proxied_file")}
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", ()):
                if isinstance(handler, RichHandler) and handler.console is not console:
                    self._rerouted.append((handler, "console", handler.console))
                    handler.console = console
                elif type(handler) is logging.StreamHandler and id(handler.stream) in redirected:
                    self._rerouted.append((handler, "stream", handler.stream))
                    handler.stream = redirected[id(handler.stream)]

    def _restore_log_handlers(self) -> None:
        while self._rerouted:
            handler, attribute, value = self._rerouted.pop()
            setattr(handler, attribute, value)
