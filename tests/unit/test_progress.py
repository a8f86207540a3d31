"""The progress bar's arithmetic and text: the last epoch a run reaches, the budget column, the steps column; and
evaluate's bars staying silent off a terminal."""

import io
import sys
import time

from rich.progress import Progress

from nextai.callbacks.budget import BudgetEstimate
from nextai.callbacks.progress import StepsColumn, budget_text, clock_time, last_epoch
from nextai.eval.evaluate import task_progress

NOON = time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, -1))  # a Monday, local time


def test_last_epoch_is_where_the_steps_run_out():
    assert last_epoch(6, 37, 5) == 0  # max_steps 6 ends inside the first of 5 epochs
    assert last_epoch(37, 37, 5) == 0 and last_epoch(38, 37, 5) == 1
    assert last_epoch(185, 37, 5) == 4
    assert last_epoch(1000, 37, 5) == 4  # never past max_epochs
    assert last_epoch(100, float("inf"), 3) == 2 and last_epoch(100, float("inf"), -1) is None
    assert last_epoch(74, 37, -1) == 1  # endless epochs, max_steps 74


def test_clock_time_names_the_day_when_it_is_not_today():
    assert clock_time(90 * 60, NOON) == "13:30"
    assert clock_time(24 * 3600, NOON) == "Tue 12:00"


def test_budget_text_before_and_after_steps_are_measured():
    start = BudgetEstimate("30m", 1800, elapsed_s=12.0, remaining_s=1788.0)
    assert budget_text(start, NOON) == "budget 29m48s left of 30m · ETA after the first step"
    ends = BudgetEstimate("30m", 1800, 60.0, 1740.0, finish_s=660.0, per_step_s=2.0, total_steps=300)
    assert budget_text(ends, NOON) == "ETA 12:10 (in 10m00s) · budget 29m00s left of 30m"
    stopped = BudgetEstimate("24h", 86400, 3600.0, 82800.0, finish_s=2e5, per_step_s=3.0, total_steps=60000,
                             stop_step=27590)
    assert budget_text(stopped, NOON) == "budget stops it near step 27590/60000 at ~Tue 11:00 · budget 23h00m00s " \
                                         "left of 24h"
    over = BudgetEstimate("1m", 60, 61.0, -1.0)
    assert budget_text(over, NOON).startswith("budget 0.0s left of 1m")


def test_steps_column_names_steps_on_the_training_bar_only():
    progress = Progress()
    train = progress.add_task("Epoch 0/0", total=6, completed=2.5, unit="step")
    validation = progress.add_task("Validation", total=8, completed=3)
    column = StepsColumn()
    assert column.render(progress.tasks[train]).plain == "step 2/6"
    assert column.render(progress.tasks[validation]).plain == "3/8"


def test_evaluate_bars_are_silent_off_a_terminal_or_when_turned_off(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    with task_progress(True) as progress:
        assert progress.disable
    with task_progress(False) as progress:
        assert progress.disable
