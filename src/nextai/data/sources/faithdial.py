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
        history = row.texts("history")
        if not history:
            return None
        context = f"Knowledge: {row.text('knowledge').strip()}"
        if len(history) > 1:
            context += "\n\nConversation so far:\n" + transcript(history[:-1], last_speaker="Assistant")
        return self.example(history[-1], row.text("response"), context)

    def convert_messages(self, row: Row) -> ChatRecord | None:
        """The knowledge (and the conversation so far) as the system turn, the seeker's last turn, then the faithful
        reply. Each FaithDial row is one reply and the earlier replies are rows of their own, so they stay context
        here rather than being trained a second time."""
        history = row.texts("history")
        if not history:
            return None
        system = f"Knowledge: {row.text('knowledge').strip()}"
        if len(history) > 1:
            system += "\n\nConversation so far:\n" + transcript(history[:-1], last_speaker="Assistant")
        return self.conversation([("system", system), ("user", history[-1]), ("assistant", row.text("response"))])
