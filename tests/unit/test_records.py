"""Reading Alpaca files: every problem names the file, the line and the field."""

import json

import pytest

from nextai.data.dataset import AlpacaSource
from nextai.errors import NextaiError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_jsonl_and_json_and_directory(tmp_path):
    rows = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "output": "d"}]
    jsonl = write(tmp_path / "x.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert [r["instruction"] for r in AlpacaSource(jsonl).load()] == ["a", "c"]
    assert AlpacaSource(jsonl).load()[1]["input"] == ""
    assert AlpacaSource(jsonl).load()[0]["source"] == "x"
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "y.json", json.dumps(rows))
    assert len(AlpacaSource(str(tmp_path / "d")).load()) == 2


def test_fingerprint_follows_content(tmp_path):
    path = write(tmp_path / "x.jsonl", '{"instruction": "a", "output": "b"}\n')
    before = AlpacaSource(path).fingerprint()
    assert AlpacaSource(path).fingerprint() == before
    write(tmp_path / "x.jsonl", '{"instruction": "a", "output": "c"}\n')
    assert AlpacaSource(path).fingerprint() != before


def test_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "output": }\n')
    with pytest.raises(NextaiError, match=r"bad.jsonl:3: not valid JSON"):
        AlpacaSource(path).load()


def test_missing_field_names_record_and_field(tmp_path):
    path = write(tmp_path / "x.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", "response": "b"}\n')
    with pytest.raises(NextaiError, match=r"x.jsonl:2: record has no 'output' field \(it has: 'instruction', 'response'\)"):
        AlpacaSource(path).load()


def test_wrong_type_names_field(tmp_path):
    path = write(tmp_path / "x.jsonl", '{"instruction": "a", "output": 3}\n')
    with pytest.raises(NextaiError, match=r"x.jsonl:1: field 'output' must be a string, got int"):
        AlpacaSource(path).load()


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(NextaiError, match="data file not found: .*nope.jsonl"):
        AlpacaSource(str(tmp_path / "nope.jsonl")).load()
    with pytest.raises(NextaiError, match="empty.jsonl: the file is empty"):
        AlpacaSource(write(tmp_path / "empty.jsonl", "\n")).load()
    with pytest.raises(NextaiError, match="expected a JSON list"):
        AlpacaSource(write(tmp_path / "obj.json", '{"a": 1}')).load()


def test_bundled_sample_resolves():
    records = AlpacaSource("bundled:alpaca_tiny.jsonl").load()
    assert len(records) > 100 and records[0]["source"] == "alpaca_tiny"
