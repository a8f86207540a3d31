"""ScienceQA (Lu et al. 2022): grade-school science questions with options, an answer index and a worked solution."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import LETTERS, NativeSource, Row, lettered


class ScienceQA(NativeSource):
    """ScienceQA (text-only questions): `question`, `choices`, `answer` (index), `hint` (context, may be empty),
    `solution` and `lecture` (may be empty), plus grade/subject/topic/skill tags.

    The output is the solution, when there is one, followed by the answer letter and option.
    """

    name = "scienceqa"
    title = "ScienceQA"
    hub_id = "tasksource/ScienceQA_text_only"

    def convert(self, row: Row) -> AlpacaRecord | None:
        choices = row.texts("choices")
        answer = row.integer("answer")
        if not 0 <= answer < len(choices):
            return None
        verdict = f"The answer is {LETTERS[answer]}. {choices[answer]}"
        solution = row.text("solution", "").strip()
        output = f"{solution}\n\n{verdict}" if solution else verdict
        return self.example(f"{row.text('question')}\n{lettered(choices)}", output, row.text("hint", ""))
