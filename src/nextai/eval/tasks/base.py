"""What every evaluation task provides: its data (as HELM scenarios), its prompt format, and its metrics."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from nextai.eval.instances import Instance
from nextai.eval.metrics import mean_metrics
from nextai.eval.prompts import PromptFormat


@dataclass(frozen=True)
class Scenario:
    """One HELM run: a named set of instances (train and eval) sharing one prompt format."""

    name: str  # e.g. "mmlu:subject=philosophy"
    instances: list[Instance]
    format: PromptFormat


@dataclass(frozen=True)
class Column:
    """A number of the report's Table 8: which metric of the task, and which direction is better."""

    label: str
    metric: str
    lower_is_better: bool = False


class Task(ABC):
    """One task family of the challenge (MMLU, BBQ, TruthfulQA, CNN/DailyMail)."""

    name: str  # key used on the command line and in results ("mmlu")
    title: str  # the report's column heading ("MMLU")
    default_data: str  # hub id or URL used when no local copy is given
    columns: tuple[Column, ...]  # the numbers this task contributes to the comparison table

    @abstractmethod
    def scenarios(self, location: str) -> list[Scenario]:
        """The task's HELM runs, read from `location` (local copy, URL or hub id)."""

    @abstractmethod
    def score(self, instance: Instance, completion: str, fmt: PromptFormat) -> dict[str, float]:
        """Metrics of one completion (the raw generated text)."""

    def aggregate(self, instances: Sequence[Instance], completions: Sequence[str],
                  scores: Sequence[dict[str, float]]) -> dict[str, float]:
        """Metrics of one scenario: the mean of each per-instance metric (tasks add their own)."""
        return mean_metrics(scores)

    def combine(self, per_scenario: dict[str, dict[str, float]]) -> dict[str, float]:
        """The task's metrics from its scenarios' (HELM's group mean: each scenario counts once)."""
        return mean_metrics(list(per_scenario.values()))
