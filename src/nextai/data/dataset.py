"""`DatasetSource`: records from any dataset (local file or folder, save_to_disk folder, hub id) in any of the
formats of `nextai.data.formats`; and `as_record_source`, which turns what the user wrote into a source."""

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from nextai.data.formats import Format, check_columns, check_format, detect_format, to_record
from nextai.data.readers import data_files, file_rows, hub_rows, is_saved_dataset, local_fingerprint, local_rows, \
    looks_local
from nextai.data.records import Record, RecordSource
from nextai.data.samples import BUNDLED_PREFIX, bundled_path
from nextai.errors import NextaiError

log = logging.getLogger(__name__)


class DatasetSource(RecordSource):
    """Records from one dataset in one format.

    Args:
        location: a .json/.jsonl/.csv/.tsv/.parquet/.arrow file, a directory of them, a `save_to_disk` folder, a
            hub dataset id, or `bundled:NAME` for a sample shipped with nextai.
        format: `auto` (recognised from the first row's fields, and logged), `alpaca`, `messages`, `sharegpt` or
            `prompt_completion` (see `nextai.data.formats`).
        columns: the dataset's names for nextai's fields and roles, e.g. `{instruction: question, output: answer}`.
        split: the split to read (hub datasets and save_to_disk folders holding several).
        name: the hub dataset's configuration (`datasets.load_dataset(id, name)`).
        data_files: files of a hub dataset to read instead of its default ones.
        tag: the `source` given to records that carry none (default: the file's stem, or the dataset id).
    """

    def __init__(self, location: str, format: Format = "auto", columns: dict[str, str] | None = None,
                 split: str = "train", name: str | None = None, data_files: str | list[str] | None = None,
                 tag: str | None = None) -> None:
        if location.startswith(BUNDLED_PREFIX):
            location = str(bundled_path(location))
        self.location = os.path.expanduser(location)
        self.format = check_format(format)
        self.columns = check_columns(columns)
        self.split = split
        self.name = name
        self.data_files = data_files
        self.tag = tag
        self.formats_read: set[str] = set()  # what the rows were, once loaded (auto resolved)

    def _is_local(self) -> bool:
        return looks_local(self.location)

    def describe(self) -> str:
        return self.location

    def fingerprint(self) -> str:
        settings = json.dumps({"format": self.format, "columns": self.columns, "split": self.split}, sort_keys=True)
        if self._is_local():
            return "local-" + hashlib.sha256((local_fingerprint(Path(self.location)) + settings).encode()).hexdigest()[:16]
        hub = json.dumps([self.location, self.name, self.data_files, settings])
        return "hub-" + hashlib.sha256(hub.encode()).hexdigest()[:16]

    def _tagged_rows(self) -> Iterator[tuple[str, object, str, str]]:
        """(where, row, default tag, origin) for every row; the origin is what format detection is logged for."""
        if not self._is_local():
            for where, row in hub_rows(self.location, self.split, self.name, self.data_files):
                yield where, row, self.tag or self.location, self.location
            return
        location = Path(self.location)
        if not location.exists():
            raise NextaiError(f"data file not found: {location}")
        if is_saved_dataset(location):
            for where, row in local_rows(location, self.split):
                yield where, row, self.tag or location.name, str(location)
            return
        for path in data_files(location):
            for where, row in file_rows(path):
                yield where, row, self.tag or path.stem, str(path)

    def load(self) -> list[Record]:
        records: list[Record] = []
        formats: dict[str, str] = {}  # origin -> its format
        for where, row, tag, origin in self._tagged_rows():
            format = self.format if self.format != "auto" else formats.get(origin)
            if format is None:
                if not isinstance(row, Mapping):
                    raise NextaiError(f"{where}: expected an object with the record's fields, got "
                                      f"{type(row).__name__}")
                format, why = detect_format(row, self.columns, where)
                log.info("data: %s: format %s (%s)", origin, format, why)
            formats[origin] = format
            records.append(to_record(row, format, self.columns, where, tag))
        self.formats_read = set(formats.values())
        return records


class AlpacaSource(DatasetSource):
    """Alpaca records (`instruction`, `input`, `output`) from a file, directory or hub id; `name` tags them."""

    def __init__(self, location: str, split: str = "train", name: str | None = None) -> None:
        super().__init__(location, format="alpaca", split=split, tag=name)


def as_record_source(source: "str | RecordSource", format: Format = "auto",
                     columns: Mapping[str, str] | None = None) -> RecordSource:
    """What `data.source` names: a registered source (`dolly`, read by its adapter, as in a mixture), else a dataset
    (file, folder or hub id) read in `format` with `columns`. A source object passes through."""
    from nextai.data.sources import SOURCES

    if not isinstance(source, str):
        return source
    if source in SOURCES and not Path(source).exists():
        adapter = SOURCES[source]
        if columns:
            raise NextaiError(f"data.columns: the registered source '{source}' reads its own schema; columns apply "
                              f"to files and hub datasets")
        if format not in ("auto", "alpaca", "messages"):
            raise NextaiError(f"data.format: the registered source '{source}' takes alpaca or messages, got '{format}'")
        return adapter(format="messages") if format == "messages" else adapter()
    return DatasetSource(source, format=format, columns=dict(columns or {}))
