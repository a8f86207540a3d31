"""Property-based fuzzing of what users type and the files they point at: the record readers and the budget and
memory parsers either return well-formed values or raise `NextaiError` naming the culprit, never anything else."""

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextai.data.dataset import AlpacaSource
from nextai.data.sources import ADAPTERS
from nextai.errors import NextaiError
from nextai.units import format_duration, parse_duration, parse_memory

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
# Objects that sometimes carry the fields a reader looks for, with values of any type.
FIELDS = ["instruction", "input", "output", "question", "answer", "text", "context", "response", "messages",
          "conversations", "choices", "data_source", "label", "problem", "solution", "category", "summary",
          "document", "Answer", "Question", "explanation", "lecture", "hint", "source", "target", "rationale"]
records = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6)
lines = st.one_of(records.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40))


def write(suffix: str, text: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nextai-fuzz-"))
    path = folder / f"data{suffix}"
    path.write_text(text, encoding="utf-8")
    return path


def check_records(loaded) -> None:
    for record in loaded:
        assert {"instruction", "input", "output", "source"} <= set(record)
        assert all(isinstance(record[key], str) for key in ("instruction", "input", "output", "source"))


@FUZZ
@given(st.lists(lines, max_size=8))
def test_alpaca_jsonl_reader_reads_or_names_the_line(rows):
    path = write(".jsonl", "\n".join(rows))
    try:
        loaded = AlpacaSource(str(path)).load()
    except NextaiError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        if re.search(r"not valid JSON", str(err)):
            number = int(re.search(rf"{re.escape(str(path))}:(\d+):", str(err)).group(1))
            with pytest.raises(json.JSONDecodeError):
                json.loads(path.read_text(encoding="utf-8").split("\n")[number - 1])
    else:
        check_records(loaded)
        # every record read came from a line that holds a JSON object
        assert len(loaded) <= sum(1 for row in rows if row.strip())


@FUZZ
@given(st.one_of(st.lists(records, max_size=6), json_values))
def test_alpaca_json_reader_reads_or_names_the_record(data):
    path = write(".json", json.dumps(data))
    try:
        check_records(AlpacaSource(str(path)).load())
    except NextaiError as err:
        assert str(path) in str(err) and "\n" not in str(err)


@FUZZ
@given(st.sampled_from(ADAPTERS), st.lists(records, min_size=1, max_size=6))
def test_every_source_adapter_maps_or_names_the_record(adapter, rows):
    path = write(".jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    try:
        check_records(adapter(str(path)).load())
    except NextaiError as err:
        assert str(path) in str(err) and "\n" not in str(err)


@FUZZ
@given(st.text(max_size=12) | st.from_regex(r"\d{1,3}(\.\d)?[dhms]( ?\d{1,2}[dhms]){0,3}", fullmatch=True)
       | st.from_regex(r"\d{1,2}:\d{1,2}:\d{1,2}", fullmatch=True))
def test_duration_parser_returns_positive_seconds_or_names_the_value(text):
    try:
        seconds = parse_duration(text, "budget.limit")
    except NextaiError as err:
        assert str(err).startswith("budget.limit:") and repr(text) in str(err)
    else:
        assert math.isfinite(seconds) and seconds > 0


@FUZZ
@given(st.integers(min_value=1, max_value=10 * 86400))
def test_printed_durations_read_back(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@FUZZ
@given(st.text(max_size=12) | st.from_regex(r"\d{1,4}(\.\d{1,2})? ?([KMGT]i?B|B)?", fullmatch=True))
def test_memory_parser_returns_positive_bytes_or_names_the_value(text):
    try:
        size = parse_memory(text, "model.memory_budget")
    except NextaiError as err:
        assert str(err).startswith("model.memory_budget:") and repr(text) in str(err)
    else:
        assert isinstance(size, int) and size > 0
