"""The challenge's four task families, by the names used on the command line and in results files."""

from nextai.errors import NextaiError
from nextai.eval.tasks.base import Column, Scenario, Task
from nextai.eval.tasks.bbq import BBQ
from nextai.eval.tasks.cnndm import CNNDailyMail
from nextai.eval.tasks.mmlu import MMLU
from nextai.eval.tasks.truthfulqa import TruthfulQA

TASKS: dict[str, type[Task]] = {"mmlu": MMLU, "bbq": BBQ, "truthfulqa": TruthfulQA, "cnndm": CNNDailyMail}
TASK_NAMES = tuple(TASKS)  # also the order of the report's Table 8


def build_task(name: str, mmlu_subjects: list[str] | None = None) -> Task:
    if name not in TASKS:
        raise NextaiError(f"unknown task '{name}'; expected one of {', '.join(TASKS)}")
    return MMLU(mmlu_subjects) if name == "mmlu" else TASKS[name]()


def table_columns() -> list[tuple[str, Column]]:
    """(task name, column) for every number of the comparison table, in Table 8's order."""
    return [(name, column) for name, task in TASKS.items() for column in task.columns]


__all__ = ["TASKS", "TASK_NAMES", "Column", "Scenario", "Task", "build_task", "table_columns"]
