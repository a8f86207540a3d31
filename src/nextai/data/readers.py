"""Rows from wherever a dataset lives: local JSON/JSONL (read here, so errors name the line), CSV, TSV, Parquet and
Arrow files (through `datasets`' loaders), a `Dataset.save_to_disk` folder, or a hub dataset id.

Each row comes with `where` it was found (`file.jsonl:12`, `file.csv row 3`, `org/set[train] row 7`) for errors.
"""

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from nextai.data.records import hash_files, read_json_objects
from nextai.errors import NextaiError, first_line

JSON_SUFFIXES = (".jsonl", ".json")
TABULAR_BUILDERS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
DATA_SUFFIXES = (*JSON_SUFFIXES, *TABULAR_BUILDERS)
SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")  # what save_to_disk writes


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / name).is_file() for name in SAVED_DATASET_FILES)


def looks_local(location: str) -> bool:
    """A path the user meant as a file: it exists, has a data suffix, or starts like a path (hub ids don't)."""
    return Path(location).exists() or location.endswith(DATA_SUFFIXES) or location.startswith((".", "/", "~"))


def data_files(location: Path) -> list[Path]:
    """The data files at `location`: the file itself, or those directly inside a directory (one kind of file)."""
    if not location.exists():
        raise NextaiError(f"data file not found: {location}")
    if location.is_dir():
        files = sorted(p for p in location.iterdir() if p.suffix in DATA_SUFFIXES)
        if not files:
            raise NextaiError(f"{location}: directory holds no data files ({', '.join(DATA_SUFFIXES)}) and is not "
                              "a save_to_disk folder")
        return files
    if location.suffix not in DATA_SUFFIXES:
        raise NextaiError(f"{location}: unsupported file type '{location.suffix}'; expected one of "
                          f"{', '.join(DATA_SUFFIXES)}, a save_to_disk folder or a hub dataset id")
    return [location]


def local_fingerprint(location: Path) -> str:
    """Changes whenever the local data at `location` changes."""
    if is_saved_dataset(location):
        return hash_files(sorted(p for p in location.rglob("*") if p.is_file()))
    return hash_files(data_files(location))


def local_rows(location: Path, split: str = "train") -> Iterator[tuple[str, object]]:
    """Every row of a local file, directory of files, or save_to_disk folder."""
    if is_saved_dataset(location):
        yield from _saved_rows(location, split)
        return
    for path in data_files(location):
        yield from file_rows(path)


def file_rows(path: Path) -> Iterator[tuple[str, object]]:
    """Every row of one data file."""
    if path.suffix in JSON_SUFFIXES:
        return iter(read_json_objects(path))
    return _tabular_rows(path)


def _tabular_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import datasets

    options = {}
    if path.suffix in (".csv", ".tsv"):
        # Text stays text ("042" is an answer, not the number 42) and an empty cell is an empty string, not NaN.
        separator = "\t" if path.suffix == ".tsv" else ","
        header = _csv_header(path, separator)
        options = {"sep": separator, "keep_default_na": False, "converters": {name: str for name in header}}
    try:
        with quiet_datasets():
            table = datasets.load_dataset(TABULAR_BUILDERS[path.suffix], data_files=str(path), split="train",
                                          **options)
    except Exception as err:  # datasets wraps the parser's error; the user needs the file and the reason
        cause = err.__cause__ or err
        raise NextaiError(f"{path}: not a readable {path.suffix[1:].upper()} file ({first_line(cause)})") from None
    for index, row in enumerate(table, start=1):
        yield f"{path} row {index}", row


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """`datasets` builds a small local file with a progress bar, and logs a parser's traceback before raising it:
    nextai reports the error itself, in one line."""
    from datasets.utils import logging as datasets_logging

    level = datasets_logging.get_verbosity()
    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        datasets_logging.set_verbosity(level)
        if bars:
            datasets_logging.enable_progress_bar()


def _csv_header(path: Path, separator: str) -> list[str]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f, delimiter=separator), None)
    except UnicodeDecodeError as err:
        raise NextaiError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not header:
        raise NextaiError(f"{path}: the file is empty")
    return header


def _saved_rows(path: Path, split: str) -> Iterator[tuple[str, dict]]:
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as err:
        raise NextaiError(f"{path}: not a readable save_to_disk folder ({first_line(err)})") from None
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise NextaiError(f"{path}: no split '{split}' (it has: {', '.join(saved)}); set the split")
        saved = saved[split]
    for index, row in enumerate(saved, start=1):
        yield f"{path}[{split}] row {index}", row


def hub_rows(dataset_id: str, split: str, name: str | None = None,
             files: str | Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Every row of one split of a hub dataset (or of a `datasets` builder such as `json` with `files`)."""
    import datasets

    try:
        table = datasets.load_dataset(dataset_id, name, split=split, data_files=files)
    except Exception as err:  # datasets raises many types; the user needs the id and the reason
        raise NextaiError(f"cannot load dataset '{dataset_id}' (split {split}): "
                          f"{type(err).__name__}: {first_line(err)}") from None
    for index, row in enumerate(table):
        yield f"{dataset_id}[{split}] row {index}", row


def rows(location: str, split: str = "train", name: str | None = None,
         files: str | Sequence[str] | None = None) -> Iterator[tuple[str, object]]:
    """Rows from a local location or a hub id (see the module docstring)."""
    location = os.path.expanduser(location)
    if looks_local(location):
        yield from local_rows(Path(location), split)
    else:
        yield from hub_rows(location, split, name, files)
