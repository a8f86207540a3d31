"""PRM800K (Lightman et al. 2023): MATH problems solved step by step, every step rated by a human labeler.

One record per labeled solution; the output is the path the labeler chose (the chosen completion of each step, or
the labeler's own rewrite of it). Only solutions that reached an answer (`finish_reason` "solution") are used.
"""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row

SOLVED = "solution"


def chosen_steps(steps: list[Row]) -> list[str] | None:
    """The text of the step the labeler chose at each point, or None when a step has no chosen text."""
    texts = []
    for step in steps:
        if step.has("chosen_completion"):
            completions = step.rows("completions")
            index = step.integer("chosen_completion")
            if not 0 <= index < len(completions):
                return None
            texts.append(completions[index].text("text"))
        elif step.has("human_completion"):
            texts.append(step.row("human_completion").text("text"))
        else:
            return None
    return texts


class PRM800K(NativeSource):
    """openai/prm800k phase files: `question` {`problem`, `ground_truth_answer`}, `label` {`steps`, `finish_reason`}.

    Each step has `completions` [{`text`, `rating`}], `chosen_completion` (an index or null) and
    `human_completion` (the labeler's own step, or null).
    """

    name = "prm800k"
    title = "PRM800K"
    hub_id = "tasksource/PRM800K"
    # The phases' files differ in schema (phase 1 has no `generation` number), so each is read on its own.
    hub_files = {"train": ("phase1_train.jsonl", "phase2_train.jsonl"),
                 "test": ("phase1_test.jsonl", "phase2_test.jsonl")}

    def convert(self, row: Row) -> AlpacaRecord | None:
        problem = row.row("question").text("problem")
        label = row.row("label")
        if label.text("finish_reason", "") != SOLVED:
            return None
        steps = chosen_steps(label.rows("steps"))
        return self.example(problem, "\n".join(steps)) if steps else None
