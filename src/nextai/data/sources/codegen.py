"""Codegen: code-writing instructions in the Alpaca schema (the report's "Codegen", added for the coding data that
the Open-Platypus filter removes).

The report cites it without a hub id; the default is an Alpaca-style code instruction set. Point `location` at the
copy you mean (any file or directory with `instruction`, `input`, `output`).
"""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row


class Codegen(NativeSource):
    """Code instructions: `instruction`, optional `input`, `output` (the code)."""

    name = "codegen"
    title = "Codegen"
    hub_id = "TokenBender/code_instructions_122k_alpaca_style"

    def convert(self, row: Row) -> AlpacaRecord | None:
        return self.example(row.text("instruction"), row.text("output"), row.text("input", ""))
