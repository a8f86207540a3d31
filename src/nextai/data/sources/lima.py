"""LIMA (Zhou et al. 2023): 1,000 carefully curated prompts and answers (a few multi-turn)."""

from nextai.data.records import AlpacaRecord, ChatRecord
from nextai.data.sources.base import NativeSource, Row
from nextai.data.sources.conversation import last_exchange


class Lima(NativeSource):
    """GAIR/lima: `conversations` (turns alternating user/assistant), `source` (where the prompt came from).

    The hub dataset is gated: accept its terms on the hub and log in, or point `location` at `train.jsonl`.
    """

    name = "lima"
    title = "LIMA"
    hub_id = "GAIR/lima"
    # The repository's loading script no longer runs in `datasets`; its data files are plain JSONL.
    hub_files = {"train": ("train.jsonl",), "test": ("test.jsonl",)}
    conversational = True

    def convert(self, row: Row) -> AlpacaRecord | None:
        exchange = last_exchange(row.texts("conversations"))
        if exchange is None:
            return None  # the test split has prompts only
        instruction, history, output = exchange
        return self.example(instruction, output, history)

    def convert_messages(self, row: Row) -> ChatRecord | None:
        return self.conversation([(("user", "assistant")[i % 2], t) for i, t in enumerate(row.texts("conversations"))])
