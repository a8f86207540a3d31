"""tigerbot-kaggle-leetcodesolutions-en-2k (TigerResearch 2023): LeetCode problems with explained solutions."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row


class TigerbotLeetcode(NativeSource):
    """Already Alpaca-shaped: `instruction` (what to write, in which language), `input` (the problem), `output`."""

    name = "tigerbot_leetcode"
    title = "tigerbot-kaggle-leetcodesolutions-en-2k"
    hub_id = "TigerResearch/tigerbot-kaggle-leetcodesolutions-en-2k"

    def convert(self, row: Row) -> AlpacaRecord | None:
        return self.example(row.text("instruction"), row.text("output"), row.text("input", ""))
