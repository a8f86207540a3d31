"""Record shapes (Alpaca, chat, prompt/completion), the JSON/JSONL reader that names file and line, and the
`RecordSource` interface every source implements.

Every problem is reported as a `NextaiError` naming the file, the line or record, and the field.
"""

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TypedDict

from nextai.errors import NextaiError


class AlpacaRecord(TypedDict):
    instruction: str
    input: str
    output: str
    source: str  # which dataset the record came from ("" when unknown)


class Message(TypedDict):
    role: str  # system, user or assistant
    content: str


class ChatRecord(TypedDict):
    """A conversation, rendered through a chat template; every assistant turn trains."""

    messages: list[Message]
    source: str


class CompletionRecord(TypedDict):
    """Text and its continuation, concatenated as they are; the completion trains."""

    prompt: str
    completion: str
    source: str


Record = AlpacaRecord | ChatRecord | CompletionRecord


def record_format(record: Record) -> str:
    """`alpaca`, `messages` or `prompt_completion`: the shape of a record (chat records are all `messages`)."""
    if "messages" in record:
        return "messages"
    if "prompt" in record:
        return "prompt_completion"
    return "alpaca"


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


def hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class RecordSource(ABC):
    """Where training records come from. `fingerprint()` changes whenever `load()` would return other records."""

    @abstractmethod
    def load(self) -> list[Record]: ...

    @abstractmethod
    def fingerprint(self) -> str: ...

    def describe(self) -> str:
        return type(self).__name__


