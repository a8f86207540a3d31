"""TheoremQA (Chen et al. 2023): university STEM questions that each need one theorem, with short answers."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row


class TheoremQA(NativeSource):
    """TheoremQA: `Question`, `Answer` (number, text, list or bool), `Answer_type`, `Picture` (questions that need
    an image are skipped), and in the original release `theorem_def` (the theorem, shown with the question)."""

    name = "theoremqa"
    title = "TheoremQA"
    hub_id = "TIGER-Lab/TheoremQA"
    hub_split = "test"  # the benchmark's only split

    def convert(self, row: Row) -> AlpacaRecord | None:
        if row.has("Picture") and row.data["Picture"] not in ("", False):
            return None  # the question refers to a figure a text model never sees
        question = row.text("Question")
        if row.has("theorem_def"):
            question = f"{question}\nRelevant Theorem: {row.text('theorem_def')}"
        return self.example(question, row.scalar_text("Answer"))
