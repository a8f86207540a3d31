"""`WallClockBudget`: finish inside a wall-clock budget (24 h by default) with a resumable checkpoint and the adapter.

Lightning's own `max_time` checks elapsed time after each micro batch: it can stop inside an accumulation
window, saves nothing itself and runs a validation after the deadline. This callback predicts instead: at every
optimizer-step boundary it asks whether the next step, a possible validation and the final save still fit, using
times it measured, and stops cleanly while they do.
"""

import logging
import statistics
import time
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nextai.callbacks.boundary import StepBoundary
from nextai.callbacks.stop import agreed, stop_run
from nextai.clock import DEFAULT_BUDGET, job_started_at
from nextai.rundir import CHECKPOINT_DIR, run_dir
from nextai.units import format_duration, parse_duration

log = logging.getLogger(__name__)


@dataclass
class StepForecast:
    """What the budget expects the next optimizer step to take, from the recent ones."""

    step_s: float  # pessimistic duration of the next optimizer step
    save_s: float  # checkpoint + adapter
    validation_s: float  # 0 when no validation is due


def forecast_step(recent: list[float], sigmas: float) -> float:
    """A pessimistic next-step time: mean + `sigmas` standard deviations of recent steps, never below the slowest
    of the last few (a single early sample is taken as it is, doubled)."""
    if not recent:
        return 0.0
    if len(recent) == 1:
        return 2 * recent[0]
    spread = statistics.pstdev(recent)
    return max(statistics.fmean(recent) + sigmas * spread, max(recent[-5:]))


@dataclass(frozen=True)
class BudgetEstimate:
    """Where the run stands against its budget: time used and left, and once steps are measured and the run's
    length is known, when it should end by itself or near which step the budget stops it."""

    budget: str  # the limit as given (`24h`)
    limit_s: float
    elapsed_s: float  # of the whole job, earlier runs of a resumed job included
    remaining_s: float
    finish_s: float | None = None  # job time at which the run ends by itself (steps, validations, final save)
    per_step_s: float | None = None  # median of the steady optimizer steps
    total_steps: int | None = None  # optimizer steps the run trains (trainer.estimated_stepping_batches)
    stop_step: int | None = None  # set when the budget ends the run first: the step it stops near

    @property
    def budget_stops_it(self) -> bool:
        return self.stop_step is not None


class WallClockBudget(Callback):
    """Stops `fit` before `budget` runs out, at an optimizer-step boundary, with a resumable checkpoint
    (`checkpoints/last.ckpt`) and the PEFT adapter written, and says why it stopped.

    The clock starts with the job — the `nextai` process, or the call of `nextai.cli.main` (see `nextai.clock`) —
    else when the callback is built, so imports, config parsing, data preparation and model loading all count;
    it carries over across resumes of the same run (the elapsed time is saved in the checkpoint).

    Args:
        limit: wall-clock budget for the whole job: `24h`, `90m`, `1d2h`, `12:00:00`.
        margin: always kept free at the end, on top of the forecast (default `30s`): it also covers what follows
            the run, such as the interpreter's exit (about 2 s on a CPU machine, unloading torch and friends).
        sigmas: how pessimistic the next-step forecast is (mean + sigmas x standard deviation).
        estimate_after: optimizer steps measured before the run's total duration is estimated and reported.
    """

    def __init__(self, limit: str = DEFAULT_BUDGET, margin: str = "30s", sigmas: float = 3.0,
                 estimate_after: int = 5) -> None:
        self.budget = limit
        self.limit_s = parse_duration(limit, "budget.limit")
        self.margin_s = parse_duration(margin, "budget.margin")
        self.sigmas = sigmas
        self.estimate_after = estimate_after
        self._clock_start = job_started_at() or time.monotonic()
        self.elapsed_before_s = 0.0  # earlier runs of this job (restored from the checkpoint)
        self.step_times: list[float] = []
        self.save_s: float | None = None
        self.validation_s: float | None = None
        self.stop_reason: str | None = None
        self._boundary_at: float | None = None
        self._boundary = StepBoundary()
        self._estimated = False
        self._validation_started: float | None = None

    # --------------------------------------------------------------------------------- clock
    def elapsed_s(self) -> float:
        return self.elapsed_before_s + time.monotonic() - self._clock_start

    def remaining_s(self) -> float:
        return self.limit_s - self.elapsed_s()

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    # --------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if agreed(trainer, self.remaining_s() <= self.margin_s):
            self._stop(trainer, f"the budget of {self.budget} is already used up "
                                f"({format_duration(self.elapsed_s())} elapsed)", save=False)
        self._sync(trainer)
        self._boundary_at = time.monotonic()
        self._boundary.start(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._boundary.passed(trainer):
            return  # inside an accumulation window: never stop here
        self._sync(trainer)
        now = time.monotonic()
        self.step_times.append(now - self._boundary_at)
        self.step_times = self.step_times[-50:]
        if self.save_s is None:
            self.save_s = self._measure_save(trainer, pl_module)
        forecast = StepForecast(step_s=forecast_step(self._steady_steps(), self.sigmas), save_s=self.save_s,
                                validation_s=self._validation_due(trainer))
        if not self._estimated and len(self.step_times) >= self.estimate_after:
            self._estimated = True
            self._report_estimate(trainer)
        needed = forecast.step_s + forecast.validation_s + forecast.save_s + self.margin_s
        remaining = self.remaining_s()
        # Every process decides from its own clock; any one running out stops all at this same step.
        if agreed(trainer, needed > remaining) and not trainer.should_stop:
            self._stop(trainer, f"{format_duration(remaining)} left of {self.budget}; the next step "
                                f"(~{forecast.step_s:.1f}s){' and validation' if forecast.validation_s else ''} plus "
                                f"saving (~{forecast.save_s:.1f}s) and the {format_duration(self.margin_s)} margin "
                                f"would not fit")
        # Time spent saving above belongs to no step.
        self._boundary_at = time.monotonic()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_started = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_started is not None:
            self.validation_s = time.monotonic() - self._validation_started
            self._validation_started = None
            self._boundary_at = time.monotonic()

    # --------------------------------------------------------------------------------- decisions
    def _steady_steps(self) -> list[float]:
        """The first step carries one-time costs (allocation, compilation); leave it out once others exist."""
        return self.step_times[1:] if len(self.step_times) > 1 else self.step_times

    def _validation_due(self, trainer: L.Trainer) -> float:
        """Expected validation time if one could run before the next check (after the next step, or at a stop)."""
        if not trainer.enable_validation:
            return 0.0
        if self.validation_s is not None:
            return self.validation_s
        # Not measured yet: a validation batch costs about a third of a training micro batch (no backward,
        # no recomputation); count it so a first validation does not overrun.
        batches = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        per_micro = (statistics.fmean(self._steady_steps()) / max(trainer.accumulate_grad_batches, 1)
                     if self.step_times else 0.0)
        return batches * per_micro / 3

    def _measure_save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """Time a real checkpoint and adapter write (after the first step, so optimizer state exists)."""
        probe_dir = run_dir(trainer) / CHECKPOINT_DIR / ".budget-probe"
        start = time.monotonic()
        trainer.save_checkpoint(probe_dir / "probe.ckpt")
        if hasattr(pl_module, "save_adapter"):  # every process: under FSDP it gathers; rank 0 writes
            pl_module.save_adapter(probe_dir / "adapter")
        elapsed = time.monotonic() - start
        if trainer.is_global_zero:
            import shutil

            shutil.rmtree(probe_dir, ignore_errors=True)
        log.info("budget: a checkpoint and adapter save takes %.2fs", elapsed)
        return elapsed

    def estimate(self, trainer: L.Trainer) -> BudgetEstimate:
        """Time used and left of the budget; with at least one measured step and a known number of steps, also when
        the run ends (its remaining steps at the median step time, its validations and the final save), or near
        which step the budget will stop it."""
        elapsed, remaining = self.elapsed_s(), self.remaining_s()
        known = BudgetEstimate(self.budget, self.limit_s, elapsed, remaining)
        total_steps = trainer.estimated_stepping_batches if self.step_times else None
        if not total_steps or total_steps == float("inf"):
            return known
        per_step = statistics.median(self._steady_steps())
        left = max(total_steps - trainer.global_step, 0)
        evaluations = (left * trainer.accumulate_grad_batches / trainer.val_check_batch
                       if trainer.enable_validation and trainer.val_check_batch not in (None, float("inf")) else 1)
        finish = elapsed + left * per_step + evaluations * (self._validation_due(trainer) or 0) + (self.save_s or 0)
        stop_step = (trainer.global_step + int(max(remaining - self.margin_s, 0) / per_step)
                     if finish > self.limit_s else None)
        return BudgetEstimate(self.budget, self.limit_s, elapsed, remaining, finish, per_step, int(total_steps),
                              stop_step)

    def _report_estimate(self, trainer: L.Trainer) -> None:
        estimate = self.estimate(trainer)
        if estimate.finish_s is None or not trainer.is_global_zero:
            return
        if estimate.budget_stops_it:
            log.warning("budget: at %.2fs per step the run needs about %s, more than its budget of %s; it will stop "
                        "near step %s of %s with a resumable checkpoint and the adapter", estimate.per_step_s,
                        format_duration(estimate.finish_s), self.budget, estimate.stop_step, estimate.total_steps)
        else:
            log.info("budget: estimated to finish after %s of %s (%.2fs per step, %d steps)",
                     format_duration(estimate.finish_s), self.budget, estimate.per_step_s, estimate.total_steps)

    def _stop(self, trainer: L.Trainer, reason: str, save: bool = True) -> None:
        self.stop_reason = f"budget: {reason}"
        overrun = self._validation_due(trainer) + (self.save_s or 0) + self.margin_s > self.remaining_s()
        stop_run(trainer, self.stop_reason, skip_validation=overrun, save=save)

    # --------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed_s(), "limit_s": self.limit_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.elapsed_before_s = float(state_dict.get("elapsed_s", 0.0))
