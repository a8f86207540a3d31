"""ReClor (Yu et al. 2020): logical-reasoning questions on a passage, from graduate admission tests."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import LETTERS, NativeSource, Row, lettered


class ReClor(NativeSource):
    """ReClor: `context` (the passage), `question`, `answers` (four options), `label` (the right one's index;
    hidden in the test split), `id_string`. The output is the answer letter."""

    name = "reclor"
    title = "ReClor"
    hub_id = "tasksource/reclor"

    def convert(self, row: Row) -> AlpacaRecord | None:
        options = row.texts("answers")
        label = row.integer("label", -1)
        if not 0 <= label < len(options):
            return None
        choose = ", ".join(LETTERS[: len(options) - 1]) + f" or {LETTERS[len(options) - 1]}"
        instruction = f"{row.text('question')}\n{lettered(options)}\nChoose {choose}."
        return self.example(instruction, LETTERS[label], row.text("context"))
