"""What every source adapter shares: reading native records (local file, directory or hub) and typed field access.

An adapter is a `NativeSource` subclass that names its default hub dataset and turns one native record (a `Row`)
into an Alpaca record, or `None` when the record cannot be used (say, a question without an answer). Adapters of
conversation datasets can also keep the turns (`format: messages`, `convert_messages`); the report flattened them
into Alpaca records, which stays the default.
"""

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import quote

from nextai.data.readers import local_fingerprint, local_rows, looks_local
from nextai.data.records import AlpacaRecord, ChatRecord, Message, Record, RecordSource, read_json_objects
from nextai.data.samples import BUNDLED_PREFIX, bundled_path
from nextai.errors import NextaiError, first_line

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Row:
    """One native record with typed field access; every problem names the record (`where`) and the field."""

    def __init__(self, data: object, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise NextaiError(f"{where}: expected a JSON object ({source} record), got {type(data).__name__}")
        self.data = data
        self.where = where
        self.source = source

    def _missing(self, name: str) -> NextaiError:
        if name in self.data:
            return NextaiError(f"{self.where}: {self.source} field '{name}' is empty (null)")
        fields = ", ".join(map(repr, self.data)) or "none"  # repr: a key may hold a newline
        return NextaiError(f"{self.where}: {self.source} record has no '{name}' field (it has: {fields})")

    def _wrong(self, name: str, expected: str) -> NextaiError:
        value = self.data[name]
        return NextaiError(f"{self.where}: {self.source} field '{name}' must be {expected}, "
                           f"got {type(value).__name__}: {value!r:.60}")

    def has(self, name: str) -> bool:
        """The field is there and not null (hub datasets fill absent optional columns with null)."""
        return self.data.get(name) is not None

    def _value(self, name: str, default: object) -> object:
        if self.data.get(name) is None:
            if default is None:
                raise self._missing(name)
            return default
        return self.data[name]

    def text(self, name: str, default: str | None = None) -> str:
        """A string field; `default` makes it optional."""
        value = self._value(name, default)
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        return value

    def first_text(self, *names: str) -> str:
        """The first of several spellings of one field that the record has (sources changed their key names)."""
        for name in names:
            if self.has(name):
                return self.text(name)
        fields = ", ".join(map(repr, self.data)) or "none"  # repr: a key may hold a newline
        spelled = " or ".join(f"'{n}'" for n in names)
        raise NextaiError(f"{self.where}: {self.source} record has no {spelled} field (it has: {fields})")

    def scalar_text(self, name: str) -> str:
        """A string, number, boolean or list field written as text (answers come in all of these)."""
        value = self._value(name, None)
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value)
        if isinstance(value, list):
            return json.dumps(value)
        raise self._wrong(name, "a string, number or list")

    def texts(self, name: str) -> list[str]:
        value = self._value(name, None)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, "a list of strings")
        return value

    def integer(self, name: str, default: int | None = None) -> int:
        value = self._value(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer")
        return value

    def row(self, name: str) -> "Row":
        """A nested object, itself read as a `Row` (`where` names the path)."""
        return Row(self._value(name, None), f"{self.where} [{name}]", self.source)

    def rows(self, name: str) -> list["Row"]:
        value = self._value(name, None)
        if not isinstance(value, list):
            raise self._wrong(name, "a list of objects")
        return [Row(item, f"{self.where} [{name}][{i}]", self.source) for i, item in enumerate(value)]


def lettered(options: Sequence[str]) -> str:
    """Multiple-choice options one per line as `A. ...`, the way HELM's joint adapter shows them."""
    if len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} options, at most {len(LETTERS)}")
    return "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))


@dataclass
class SourceRead:
    """What reading one source gave: its records and how many native rows each step let through."""

    records: list[Record]
    rows: int  # native records read
    filtered: int = 0  # removed by the source's own filter (Open-Platypus: LLM-generated parts)
    unusable: int = 0  # could not become an Alpaca record (no answer, unsolved, empty text)
    notes: list[str] = field(default_factory=list)


class NativeSource(RecordSource):
    """A dataset read in its own schema and mapped to Alpaca records tagged with the source's `name`.

    Args:
        location: a local .json/.jsonl file or a directory of them in the source's native schema,
            `bundled:NAME` for a sample shipped with nextai, or another hub dataset id; default: the source's
            own hub dataset (`hub_id`).
        split: the split to read (default: the source's `hub_split`).
        format: `alpaca` (the report's flattening: one Alpaca record per conversation) or, for conversation
            sources, `messages` (every turn kept, rendered through the chat template, every reply trained).
    """

    name: ClassVar[str]  # registry key and the `source` tag of every record
    title: ClassVar[str]  # how the report and the dataset's authors call it
    hub_id: ClassVar[str]  # default dataset on the Hugging Face hub
    hub_split: ClassVar[str] = "train"
    hub_config: ClassVar[str | None] = None
    # Files of the default hub dataset, per split, read one by one: JSON/JSONL files by name, Parquet by glob. For
    # repositories whose files differ in schema (one `load_dataset` call cannot put them into one table) or that
    # ship a loading script (which `datasets` no longer runs).
    hub_files: ClassVar[dict[str, tuple[str, ...]]] = {}
    hub_revision: ClassVar[str | None] = None  # the branch `hub_files` are read from (default: main)
    conversational: ClassVar[bool] = False  # the source holds turns, and `convert_messages` keeps them

    def __init__(self, location: str | None = None, split: str | None = None,
                 format: Literal["alpaca", "messages"] = "alpaca") -> None:
        if location is not None and location.startswith(BUNDLED_PREFIX):
            location = str(bundled_path(location))
        if format not in ("alpaca", "messages"):
            raise NextaiError(f"{self.name}: format must be alpaca or messages, got '{format}'")
        if format == "messages" and not self.conversational:
            from nextai.data.sources import conversational_sources

            raise NextaiError(f"{self.name}: format messages keeps a conversation's turns; {self.name} has none "
                              f"(conversation sources: {', '.join(conversational_sources())})")
        self.location = os.path.expanduser(location) if location is not None else None
        self.split = split or self.hub_split
        self.format = format

    # ------------------------------------------------------------------------------------ the adapter's part
    def convert(self, row: Row) -> AlpacaRecord | None:
        """One native record as an Alpaca record, or None when it cannot be used."""
        raise NotImplementedError

    def convert_messages(self, row: Row) -> ChatRecord | None:
        """One native conversation with its turns kept (conversation sources only), or None when unusable."""
        raise NotImplementedError

    def include(self, row: Row) -> bool:
        """The source's own filter (before conversion); everything passes unless an adapter says otherwise."""
        return True

    def options(self) -> dict:
        """Adapter settings that change which records come out (part of the fingerprint)."""
        return {}

    def example(self, instruction: str, output: str, input: str = "") -> AlpacaRecord | None:
        """An Alpaca record tagged with this source; None when the instruction or the output is blank."""
        if not instruction.strip() or not output.strip():
            return None
        return AlpacaRecord(instruction=instruction.strip(), input=input.strip(), output=output.strip(),
                            source=self.name)

    def conversation(self, turns: Sequence[tuple[str, str]]) -> ChatRecord | None:
        """A chat record of (role, text) turns tagged with this source; None without a non-blank assistant reply."""
        messages = [Message(role=role, content=text.strip()) for role, text in turns if text.strip()]
        if not any(m["role"] == "assistant" for m in messages):
            return None
        return ChatRecord(messages=messages, source=self.name)

    # ------------------------------------------------------------------------------------ reading
    def _is_local(self) -> bool:
        return self.location is not None and looks_local(self.location)

    def describe(self) -> str:
        return f"{self.name} ({self.location or self.hub_id}, {self.split})"

    def fingerprint(self) -> str:
        adapter = Path(inspect.getfile(type(self))).read_bytes()  # the mapping code itself: edit it, re-read
        digest = hashlib.sha256(adapter)
        digest.update(json.dumps({"name": self.name, "split": self.split, "options": self.options(),
                                  **({"format": self.format} if self.format != "alpaca" else {})},
                                 sort_keys=True, default=list).encode())
        if self._is_local():
            digest.update(local_fingerprint(Path(self.location)).encode())
        else:
            digest.update(f"hub:{self.location or self.hub_id}:{self.hub_config}".encode())
        return digest.hexdigest()[:16]

    def native_rows(self) -> Iterator[Row]:
        if self._is_local():
            if not Path(self.location).exists():
                raise NextaiError(f"data file not found: {self.location}")
            for where, raw in local_rows(Path(self.location), self.split):
                yield Row(raw, where, self.name)
        else:
            yield from self._hub_rows()

    def _hub_rows(self) -> Iterator[Row]:
        dataset_id = self.location or self.hub_id
        files = self.hub_files.get(self.split) if self.location is None else None
        for data_file in files or (None,):
            try:
                rows = self._hub_table(dataset_id, data_file)
            except NextaiError:
                raise  # a record of the downloaded file is wrong: the message already names it
            except Exception as err:  # hub, auth and format errors: the user needs the id, the reason and a way out
                reason = first_line(err)
                raise NextaiError(f"{self.name}: cannot load '{dataset_id}' ({data_file or 'split ' + self.split}) "
                                  f"from the hub: {type(err).__name__}: {reason}; download it and point "
                                  f"`location` at the file or directory") from None
            yield from rows

    def _hub_table(self, dataset_id: str, data_file: str | None) -> list[Row]:
        """One hub dataset split, or one of its files; JSON files are parsed here (no Arrow type inference, which
        fails on nested records whose fields are null in the first rows) and keep their line numbers."""
        import datasets

        if data_file is None:
            table = datasets.load_dataset(dataset_id, self.hub_config, split=self.split)
            return [Row(raw, f"{dataset_id}[{self.split}] row {i}", self.name) for i, raw in enumerate(table)]
        if data_file.endswith((".json", ".jsonl")):
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(dataset_id, data_file, repo_type="dataset", revision=self.hub_revision))
            return [Row(raw, f"{dataset_id}/{data_file}{where.removeprefix(str(path))}", self.name)
                    for where, raw in read_json_objects(path)]
        revision = f"@{quote(self.hub_revision, safe='')}" if self.hub_revision else ""
        table = datasets.load_dataset("parquet", data_files=f"hf://datasets/{dataset_id}{revision}/{data_file}",
                                      split="train")
        return [Row(raw, f"{dataset_id}/{data_file} row {i}", self.name) for i, raw in enumerate(table)]

    def read(self) -> SourceRead:
        """Every native record through the source's filter and mapping, counting what each step dropped."""
        result = SourceRead(records=[], rows=0)
        for row in self.native_rows():
            result.rows += 1
            if not self.include(row):
                result.filtered += 1
                continue
            record = self.convert_messages(row) if self.format == "messages" else self.convert(row)
            if record is None:
                result.unusable += 1
            else:
                result.records.append(record)
        if result.rows == 0:
            raise NextaiError(f"{self.describe()}: no records")
        log.info("%s: %d records read, %d filtered out, %d unusable", self.describe(), result.rows,
                 result.filtered, result.unusable)
        return result

    def load(self) -> list[Record]:
        return self.read().records
