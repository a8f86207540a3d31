"""FaithDial (Dziri et al. 2022): information-seeking dialogue whose replies stay faithful to a given passage."""

from nextai.data.records import AlpacaRecord, ChatRecord
from nextai.data.sources.base import NativeSource, Row
from nextai.data.sources.conversation import transcript


class FaithDial(NativeSource):
    """FaithDial: `history` (the turns so far, the seeker's last), `knowledge` (the passage the reply must stay
    within), `response` (the faithful reply), plus `original_response` and the BEGIN/VRM labels.

    The instruction is the seeker's last turn; the input holds the knowledge and the earlier turns.
    """

    name = "faithdial"
    title = "FaithDial"
    hub_id = "McGill-NLP/FaithDial"
    # The main branch only has a loading script and nested JSON; the hub's Parquet export holds the flat records.
    hub_revision = "refs/convert/parquet"
    hub_files = {split: (f"plain_text/{split}/*.parquet",) for split in ("train", "validation", "test")}
    conversational = True

    def convert(self, row: Row) -> AlpacaRecord | None:
        if (parts := self.parts(row)) is None:
            return None
        context, question, reply = parts
        return self.example(question, reply, context)

    def convert_messages(self, row: Row) -> ChatRecord | None:
        """The knowledge (and the conversation so far) as the system turn, the seeker's last turn, then the faithful
        reply. Each FaithDial row is one reply and the earlier replies are rows of their own, so they stay context
        here rather than being trained a second time."""
        if (parts := self.parts(row)) is None:
            return None
        context, question, reply = parts
        return self.conversation([("system", context), ("user", question), ("assistant", reply)])

    @staticmethod
    def parts(row: Row) -> tuple[str, str, str] | None:
        """(the knowledge and the conversation so far, the seeker's last turn, the faithful reply), or None for a
        row without a turn to answer."""
        history = row.texts("history")
        if not history:
            return None
        context = f"Knowledge: {row.text('knowledge').strip()}"
        if len(history) > 1:
            context += "\n\nConversation so far:\n" + transcript(history[:-1], last_speaker="Assistant")
        return context, history[-1], row.text("response")
