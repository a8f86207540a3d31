"""Dolly-15k (Databricks 2023): human-written instructions; `context` is the passage some categories come with."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row


class Dolly(NativeSource):
    """databricks-dolly-15k: `instruction`, `context` (may be empty), `response`, `category`."""

    name = "dolly"
    title = "Dolly-15k"
    hub_id = "databricks/databricks-dolly-15k"

    def convert(self, row: Row) -> AlpacaRecord | None:
        return self.example(row.text("instruction"), row.text("response"), row.text("context", ""))
