"""Where evaluation data comes from: a local copy in the source's own layout, a URL, or a hub dataset id.

Each task reads its source's native schema (MMLU's CSVs, BBQ's JSONL, TruthfulQA's CSV, CNN/DM's records), so a
directory downloaded from the original site works as is. Problems are `NextaiError`s naming the file and line.
"""

import csv
import json
import os
from pathlib import Path

from nextai.errors import NextaiError, first_line

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
HUB = "hub"  # each task's default source (hub id or the URL HELM downloads from)
BUNDLED = "bundled"  # the small sample files shipped with nextai (tests, the tiny run)


def task_location(task: str, default: str, eval_data: str, overrides: dict[str, str] | None = None) -> str:
    """The location of `task`'s data: an explicit override, else the default source (`hub`), the bundled
    samples (`bundled`), or `<eval_data>/<task>` for a directory holding one folder per task."""
    if overrides and task in overrides:
        return os.path.expanduser(overrides[task])
    if eval_data == HUB:
        return default
    if eval_data == BUNDLED:
        return str(SAMPLES_DIR / task)
    return str(Path(os.path.expanduser(eval_data)) / task)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def is_local(location: str) -> bool:
    """A path the user meant as local: it exists or starts like a path (hub ids look like `owner/name`)."""
    return Path(location).exists() or location.startswith((".", "/", "~"))


def download(url: str) -> Path:
    """A local copy of `url`, downloaded once into the datasets cache."""
    import datasets

    try:
        return Path(datasets.DownloadManager().download(url))
    except Exception as err:  # network and HTTP errors come in many types; the user needs the URL and the reason
        raise NextaiError(f"cannot download {url}: {type(err).__name__}: {first_line(err)}") from None


def load_hub(dataset: str, config: str | None, split: str):
    """One split of a hub dataset, through `datasets` (cached after the first download)."""
    import datasets

    try:
        return datasets.load_dataset(dataset, config, split=split)
    except Exception as err:  # datasets raises many types; the user needs the id and the reason
        where = f"{dataset}" + (f" ({config})" if config else "") + f" split {split}"
        raise NextaiError(f"cannot load dataset {where}: {type(err).__name__}: {first_line(err)}") from None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NextaiError(f"data file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise NextaiError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_csv_rows(path: Path, header: bool) -> list[tuple[str, list[str] | dict[str, str]]]:
    """(where, row) pairs: lists for header-less files, dicts keyed by the header otherwise."""
    lines = read_text(path).splitlines(keepends=True)
    rows = []
    reader = csv.DictReader(lines) if header else csv.reader(lines)
    try:
        for row in reader:
            rows.append((f"{path}:{reader.line_num}", row))
    except csv.Error as err:
        raise NextaiError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
    return rows


def read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """(where, object) pairs of a JSON-lines file; every line must be a JSON object."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise NextaiError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(value, dict):
            raise NextaiError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        rows.append((f"{path}:{number}", value))
    return rows


def field(row: dict, name: str, where: str, kind: type = str):
    """`row[name]`, checked to be of `kind`, or an error naming the record and the field."""
    if name not in row:
        raise NextaiError(f"{where}: record has no '{name}' field (it has: {', '.join(map(str, row)) or 'none'})")
    value = row[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NextaiError(f"{where}: field '{name}' must be {kind.__name__}, got {type(value).__name__}: "
                          f"{value!r:.60}")
    return value
