"""Alpaca records (instruction, input, output) from JSON/JSONL files, directories or hub datasets.

Every problem is reported as a `NextaiError` naming the file, the line or record, and the field.
"""

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TypedDict

from nextai.data.samples import BUNDLED_PREFIX, bundled_path
from nextai.errors import NextaiError, first_line

DATA_SUFFIXES = (".jsonl", ".json")


class AlpacaRecord(TypedDict):
    instruction: str
    input: str
    output: str
    source: str  # which dataset the record came from ("" when unknown)


def alpaca_record(raw: object, where: str, source: str = "") -> AlpacaRecord:
    """Check one raw record and return it as an `AlpacaRecord`; `where` names it in errors ("file.jsonl:12")."""
    if not isinstance(raw, dict):
        raise NextaiError(f"{where}: expected a JSON object with instruction/input/output, got {type(raw).__name__}")
    for field in ("instruction", "output"):
        if field not in raw:
            raise NextaiError(f"{where}: record has no '{field}' field (it has: {', '.join(map(repr, raw)) or 'none'})")
    fields = {}
    for field in ("instruction", "input", "output"):
        value = raw.get(field, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise NextaiError(f"{where}: field '{field}' must be a string, got {type(value).__name__}: {value!r:.60}")
        fields[field] = value
    tag = raw.get("source") or source
    return AlpacaRecord(instruction=fields["instruction"], input=fields["input"], output=fields["output"],
                        source=str(tag))


def read_json_objects(path: Path) -> list[tuple[str, object]]:
    """Parse a .jsonl (one object a line) or .json (a list of objects) file into (where, object) pairs."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NextaiError(f"data file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise NextaiError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise NextaiError(f"{path}: the file is empty")
    if path.suffix == ".jsonl":
        objects = []
        # split on newlines only: str.splitlines would also cut at U+2028 and friends, which JSON strings may hold
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                objects.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise NextaiError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        return objects
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise NextaiError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise NextaiError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [(f"{path}: record {index}", item) for index, item in enumerate(data)]


def data_files(location: Path) -> list[Path]:
    """The .json/.jsonl files at `location` (the file itself, or those directly inside a directory)."""
    if not location.exists():
        raise NextaiError(f"data file not found: {location}")
    if location.is_dir():
        files = sorted(p for p in location.iterdir() if p.suffix in DATA_SUFFIXES)
        if not files:
            raise NextaiError(f"{location}: directory holds no .json or .jsonl files")
        return files
    if location.suffix not in DATA_SUFFIXES:
        raise NextaiError(f"{location}: expected a .json or .jsonl file")
    return [location]


def looks_local(location: str) -> bool:
    """A path the user meant as a file: it exists, has a data suffix, or starts like a path (hub ids don't)."""
    return Path(location).exists() or location.endswith(DATA_SUFFIXES) or location.startswith((".", "/", "~"))


def hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class RecordSource(ABC):
    """Where training records come from. `fingerprint()` changes whenever `load()` would return other records."""

    @abstractmethod
    def load(self) -> list[AlpacaRecord]: ...

    @abstractmethod
    def fingerprint(self) -> str: ...

    def describe(self) -> str:
        return type(self).__name__


class AlpacaSource(RecordSource):
    """Alpaca records from a local .json/.jsonl file, a directory of them, or a hub dataset id.

    Args:
        location: a file, a directory, a dataset id on the Hugging Face hub (loaded through `datasets`), or
            `bundled:NAME` for a sample file shipped with nextai.
        split: the split of a hub dataset.
        name: the source tag given to records that carry none (default: the file stem or dataset id).
    """

    def __init__(self, location: str, split: str = "train", name: str | None = None) -> None:
        if location.startswith(BUNDLED_PREFIX):
            location = str(bundled_path(location))
        self.location = os.path.expanduser(location)
        self.split = split
        self.name = name

    def _is_local(self) -> bool:
        return looks_local(self.location)

    def describe(self) -> str:
        return self.location

    def fingerprint(self) -> str:
        if self._is_local():
            return "local-" + hash_files(data_files(Path(self.location)))
        return "hub-" + hashlib.sha256(f"{self.location}:{self.split}".encode()).hexdigest()[:16]

    def load(self) -> list[AlpacaRecord]:
        if self._is_local():
            location = Path(self.location)
            if not location.exists():
                raise NextaiError(f"data file not found: {location}")
            records = []
            for path in data_files(location):
                tag = self.name or path.stem
                records += [alpaca_record(raw, where, tag) for where, raw in read_json_objects(path)]
            return records
        return self._load_hub()

    def _load_hub(self) -> list[AlpacaRecord]:
        import datasets

        try:
            dataset = datasets.load_dataset(self.location, split=self.split)
        except Exception as err:  # datasets raises many types; the user needs the id and the reason
            raise NextaiError(f"cannot load dataset '{self.location}' (split {self.split}): "
                              f"{type(err).__name__}: {first_line(err)}") from None
        tag = self.name or self.location
        return [alpaca_record(raw, f"{self.location}[{self.split}] row {i}", tag) for i, raw in enumerate(dataset)]


def as_record_source(source: "str | RecordSource") -> RecordSource:
    """A plain string is an Alpaca file, directory or hub id."""
    return AlpacaSource(source) if isinstance(source, str) else source
