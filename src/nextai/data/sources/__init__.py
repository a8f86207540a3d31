"""Source adapters: one module per dataset of the report (Tables 1 and 7), and the registry of their names.

Adding a source: write a `NativeSource` subclass in its own module (its name, default hub id and `convert`), a
sample file in its native schema under `samples/sources/`, a test, and list the class in `ADAPTERS` below.
"""

from nextai.data.sources.alpaca import Alpaca
from nextai.data.sources.arb import ARB
from nextai.data.sources.base import NativeSource, Row, SourceRead
from nextai.data.sources.codegen import Codegen
from nextai.data.sources.dolly import Dolly
from nextai.data.sources.faithdial import FaithDial
from nextai.data.sources.flan_cot import FlanCot
from nextai.data.sources.guanaco import Guanaco
from nextai.data.sources.leetcode import TigerbotLeetcode
from nextai.data.sources.lima import Lima
from nextai.data.sources.multi_news import MultiNews
from nextai.data.sources.platypus import LLM_GENERATED, OpenPlatypus
from nextai.data.sources.prm800k import PRM800K
from nextai.data.sources.reclor import ReClor
from nextai.data.sources.scienceqa import ScienceQA
from nextai.data.sources.theoremqa import TheoremQA
from nextai.errors import NextaiError

ADAPTERS: tuple[type[NativeSource], ...] = (
    OpenPlatypus, PRM800K, ScienceQA, ReClor, TheoremQA, TigerbotLeetcode, ARB, Guanaco,  # Table 1: Platypus' parts
    MultiNews, FaithDial, Lima, Codegen, Dolly,  # Table 1: the rest
    FlanCot,  # Table 7, version 7
    Alpaca,  # any data already in the Alpaca schema
)
SOURCES: dict[str, type[NativeSource]] = {adapter.name: adapter for adapter in ADAPTERS}


def conversational_sources() -> list[str]:
    """Sources whose records are conversations: they can keep their turns (`format: messages`)."""
    return sorted(name for name, adapter in SOURCES.items() if adapter.conversational)


def source_class(name: str) -> type[NativeSource]:
    """The adapter registered under `name`; an unknown name lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise NextaiError(f"unknown data source '{name}'; known sources: {', '.join(sorted(SOURCES))}") from None


__all__ = [
    "ADAPTERS", "ARB", "LLM_GENERATED", "PRM800K", "SOURCES", "Alpaca", "Codegen", "Dolly", "FaithDial", "FlanCot",
    "Guanaco", "Lima", "MultiNews", "NativeSource", "OpenPlatypus", "ReClor", "Row", "ScienceQA", "SourceRead",
    "TheoremQA", "TigerbotLeetcode", "conversational_sources", "source_class",
]
