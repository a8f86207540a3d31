"""OpenAssistant-Guanaco (Dettmers et al. 2023): the highest-rated OpenAssistant conversations, one text each."""

import re

from nextai.data.records import AlpacaRecord, ChatRecord
from nextai.data.sources.base import NativeSource, Row
from nextai.data.sources.conversation import last_exchange

TURN = re.compile(r"### (Human|Assistant):")


def split_turns(text: str) -> list[str] | None:
    """`### Human: ... ### Assistant: ...` into the turns' texts; None unless speakers alternate from Human."""
    parts = TURN.split(text)
    if parts[0].strip():
        return None  # text before the first speaker marker
    speakers, turns = parts[1::2], [t.strip() for t in parts[2::2]]
    if any(speaker != ("Human", "Assistant")[i % 2] for i, speaker in enumerate(speakers)):
        return None
    return turns


class Guanaco(NativeSource):
    """openassistant-guanaco: `text`, a conversation written `### Human: ... ### Assistant: ...`."""

    name = "guanaco"
    title = "OpenAssistant-Guanaco"
    hub_id = "timdettmers/openassistant-guanaco"
    conversational = True

    def convert(self, row: Row) -> AlpacaRecord | None:
        turns = split_turns(row.text("text"))
        exchange = last_exchange(turns) if turns else None
        if exchange is None:
            return None
        instruction, history, output = exchange
        return self.example(instruction, output, history)

    def convert_messages(self, row: Row) -> ChatRecord | None:
        turns = split_turns(row.text("text"))
        if not turns:
            return None
        return self.conversation([(("user", "assistant")[i % 2], turn) for i, turn in enumerate(turns)])
