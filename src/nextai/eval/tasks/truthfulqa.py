"""TruthfulQA (Lin et al. 2022), HELM's single-answer multiple choice: the best answer among the incorrect ones.

Data: the original `TruthfulQA.csv` (columns Question, Best Answer, Incorrect Answers with answers joined by ";"),
as a file, a directory holding it, or a URL; or a hub dataset with the `truthfulqa/truthful_qa` "generation" schema
(question, best_answer, incorrect_answers as a list). As in HELM, the first 20% of questions are the train split
(in-context examples) and the rest is evaluated; the options are rotated by the best answer's first character.
"""

from pathlib import Path

from nextai.errors import NextaiError
from nextai.eval.instances import Instance
from nextai.eval.sources import download, field, is_local, is_url, load_hub, read_csv_rows
from nextai.eval.tasks.base import Column, Scenario
from nextai.eval.tasks.multiple_choice import MultipleChoiceTask, joint_format

FILE_NAME = "TruthfulQA.csv"
TRAIN_RATIO = 0.2
HUB_CONFIG, HUB_SPLIT = "generation", "validation"


def sentence(answer: str) -> str:
    """HELM ends every answer with a full stop."""
    answer = answer.strip()
    return answer if answer.endswith(".") else answer + "."


def truthfulqa_instance(question: str, best: str, incorrect: list[str], where: str, split, ident: str) -> Instance:
    best = sentence(best)
    wrong = [sentence(a) for a in incorrect if a.strip()]
    if not question.strip() or best == ".":
        raise NextaiError(f"{where}: empty question or best answer")
    options = wrong + [best]
    shift = ord(best[0]) % len(options)  # HELM's rotation, so the correct letter varies
    options = options[shift:] + options[:shift]
    return Instance(id=ident, input=question.strip(), references=tuple(options),
                    correct=(options.index(best),), split=split)


class TruthfulQA(MultipleChoiceTask):
    name = "truthfulqa"
    title = "TruthfulQA"
    default_data = "truthfulqa/truthful_qa"
    columns = (Column("TruthfulQA", "exact_match"),)

    def scenarios(self, location: str) -> list[Scenario]:
        rows = self._rows(location)
        if not rows:
            raise NextaiError(f"{location}: no TruthfulQA questions")
        first_valid = int(len(rows) * TRAIN_RATIO)
        instances = [truthfulqa_instance(q, best, wrong, where, "train" if i < first_valid else "valid", str(i))
                     for i, (where, q, best, wrong) in enumerate(rows)]
        return [Scenario("truthful_qa:task=mc_single", instances, joint_format("", "Question"))]

    def _rows(self, location: str) -> list[tuple[str, str, str, list[str]]]:
        if is_url(location) or is_local(location):
            path = download(location) if is_url(location) else Path(location)
            if path.is_dir():
                path = path / FILE_NAME
            rows = []
            for where, row in read_csv_rows(path, header=True):
                question, best, wrong = (field(row, key, where) for key in ("Question", "Best Answer",
                                                                            "Incorrect Answers"))
                rows.append((where, question, best, wrong.split(";")))
            return rows
        rows = []
        for number, row in enumerate(load_hub(location, HUB_CONFIG, HUB_SPLIT)):
            where = f"{location} row {number}"
            rows.append((where, field(row, "question", where), field(row, "best_answer", where),
                         list(field(row, "incorrect_answers", where, list))))
        return rows
