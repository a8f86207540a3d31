"""Alpaca (Taori et al. 2023) and any dataset already in its schema: instruction, optional input, output."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row


class Alpaca(NativeSource):
    """Records already in the Alpaca schema (`instruction`, `input`, `output`); default: tatsu-lab/alpaca."""

    name = "alpaca"
    title = "Alpaca-format instructions"
    hub_id = "tatsu-lab/alpaca"

    def convert(self, row: Row) -> AlpacaRecord | None:
        return self.example(row.text("instruction"), row.text("output"), row.text("input", ""))
