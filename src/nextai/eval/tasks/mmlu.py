"""MMLU (Hendrycks et al. 2021), the challenge's 17 subjects, each its own HELM run, 5-shot from the dev split.

Data: a local copy of the original CSV layout (`dev/`, `val/`, `test/` holding `<subject>_<split>.csv` rows of
question, options, answer letter; no header), or a hub dataset with the `cais/mmlu` schema (one config per subject;
question, choices, answer index). HELM evaluates the val and test splits together.
"""

import logging
from pathlib import Path

from nextai.errors import NextaiError
from nextai.eval.instances import Instance, Split
from nextai.eval.sources import field, is_local, load_hub, read_csv_rows
from nextai.eval.tasks.base import Column, Scenario
from nextai.eval.tasks.multiple_choice import MultipleChoiceTask, joint_format

log = logging.getLogger(__name__)

# The subjects of the challenge's run specs (llm-efficiency-challenge/neurips_llm_efficiency_challenge).
CHALLENGE_SUBJECTS = (
    "philosophy", "moral_disputes", "moral_scenarios",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science", "high_school_european_history",
    "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics", "high_school_psychology",
    "high_school_statistics", "high_school_us_history", "high_school_world_history",
)
LOCAL_SPLITS: dict[str, Split] = {"dev": "train", "val": "valid", "test": "test"}
HUB_SPLITS: dict[str, Split] = {"dev": "train", "validation": "valid", "test": "test"}


def instructions(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."


def csv_instance(row: list[str], where: str, split: Split, ident: str) -> Instance:
    if len(row) < 4:
        raise NextaiError(f"{where}: expected question, at least two options and the answer letter; "
                          f"got {len(row)} columns")
    question, options, answer = row[0], tuple(row[1:-1]), row[-1].strip()
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if answer not in letters:
        raise NextaiError(f"{where}: answer {answer!r} is not one of the option letters {', '.join(letters)}")
    # HELM marks every option equal to the answer's text as correct.
    correct = tuple(i for i, option in enumerate(options) if option == options[letters.index(answer)])
    return Instance(id=ident, input=question, references=options, correct=correct, split=split)


class MMLU(MultipleChoiceTask):
    """Args:
        subjects: MMLU subjects to run; default the challenge's 17 (with a local copy, those of them it holds).
    """

    name = "mmlu"
    title = "MMLU"
    default_data = "cais/mmlu"
    columns = (Column("MMLU", "exact_match"),)

    def __init__(self, subjects: list[str] | None = None) -> None:
        self.subjects = list(subjects) if subjects else None

    def scenarios(self, location: str) -> list[Scenario]:
        subjects = self._subjects(location)
        return [Scenario(f"mmlu:subject={subject}", self._instances(location, subject), joint_format(
            instructions(subject), "Question")) for subject in subjects]

    def _subjects(self, location: str) -> list[str]:
        if self.subjects is not None or not is_local(location):
            return self.subjects or list(CHALLENGE_SUBJECTS)
        test_dir = Path(location) / "test"
        if not test_dir.is_dir():
            raise NextaiError(f"{location}: not an MMLU directory (no test/ folder of <subject>_test.csv files)")
        held = [s for s in CHALLENGE_SUBJECTS if (test_dir / f"{s}_test.csv").is_file()]
        if not held:
            raise NextaiError(f"{test_dir}: holds none of the challenge's 17 MMLU subjects; name them with "
                              "mmlu_subjects")
        if len(held) < len(CHALLENGE_SUBJECTS):
            log.info("MMLU: %d of the challenge's %d subjects are in %s: %s", len(held), len(CHALLENGE_SUBJECTS),
                     location, ", ".join(held))
        return held

    def _instances(self, location: str, subject: str) -> list[Instance]:
        if is_local(location):
            instances = []
            for folder, split in LOCAL_SPLITS.items():
                path = Path(location) / folder / f"{subject}_{folder}.csv"
                if not path.is_file():
                    if folder == "test":
                        raise NextaiError(f"MMLU subject '{subject}': no test file {path}")
                    continue
                for number, (where, row) in enumerate(read_csv_rows(path, header=False)):
                    instances.append(csv_instance(row, where, split, f"{subject}:{folder}:{number}"))
            return instances
        instances = []
        for hub_split, split in HUB_SPLITS.items():
            for number, row in enumerate(load_hub(location, subject, hub_split)):
                where = f"{location} ({subject}) {hub_split} row {number}"
                choices = tuple(field(row, "choices", where, list))
                answer = field(row, "answer", where, int)
                if not 0 <= answer < len(choices):
                    raise NextaiError(f"{where}: answer {answer} is not an index of its {len(choices)} choices")
                correct = tuple(i for i, c in enumerate(choices) if c == choices[answer])
                instances.append(Instance(id=f"{subject}:{hub_split}:{number}", input=field(row, "question", where),
                                          references=choices, correct=correct, split=split))
        return instances
