"""Every record format from every kind of file: auto detection, column maps, role names, and one-line errors that
name the file, row, field or role."""

import json

import pytest

from nextai.data.dataset import DatasetSource, as_record_source
from nextai.data.sources import Dolly, Lima
from nextai.errors import NextaiError

ALPACA_ROWS = [{"instruction": "Name a color.", "input": "", "output": "Red."},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("rows, format", [
    (ALPACA_ROWS, "alpaca"),
    ([{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}], "messages"),
    ([{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}], "sharegpt"),
    ([{"messages": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}], "sharegpt"),
    ([{"prompt": "The sky is", "completion": " blue."}], "prompt_completion"),
])
def test_auto_detects_each_format_and_logs_it(tmp_path, caplog, rows, format):
    caplog.set_level("INFO")
    records = DatasetSource(write_jsonl(tmp_path / "x.jsonl", rows)).load()
    assert len(records) == len(rows)
    assert f"format {format}" in caplog.text
    if format in ("messages", "sharegpt"):
        assert records[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]


def test_sharegpt_roles_and_system_turns_are_normalised(tmp_path):
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                             {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Bye"},
                             {"from": "chatgpt", "value": "Bye."}]}
    record = DatasetSource(write_jsonl(tmp_path / "x.jsonl", [row]), format="sharegpt").load()[0]
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_column_map_renames_fields_and_roles(tmp_path):
    rows = [{"question": "Name a color.", "answer": "Red."}]
    record = DatasetSource(write_jsonl(tmp_path / "qa.jsonl", rows),
                           columns={"instruction": "question", "output": "answer"}).load()[0]
    assert (record["instruction"], record["input"], record["output"]) == ("Name a color.", "", "Red.")
    chats = [{"dialog": [{"speaker": "client", "text": "Hi"}, {"speaker": "agent", "text": "Hello."}],
              "persona": "Be brief."}]
    record = DatasetSource(write_jsonl(tmp_path / "chat.jsonl", chats), format="messages",
                           columns={"messages": "dialog", "role": "speaker", "content": "text", "user": "client",
                                    "assistant": "agent", "system": "persona"}).load()[0]
    assert record["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Hello."}]


def test_tabular_files_and_saved_datasets_give_the_same_records(tmp_path):
    import datasets
    import pyarrow as pa

    table = datasets.Dataset.from_list(ALPACA_ROWS)
    expected = DatasetSource(write_jsonl(tmp_path / "a.jsonl", ALPACA_ROWS)).load()
    (tmp_path / "a.csv").write_text("instruction,input,output\nName a color.,,Red.\nAdd the numbers.,2 and 3,5\n")
    (tmp_path / "a.tsv").write_text("instruction\tinput\toutput\nName a color.\t\tRed.\nAdd the numbers.\t2 and 3\t5\n")
    table.to_parquet(str(tmp_path / "a.parquet"))
    with pa.OSFile(str(tmp_path / "a.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.data.schema) as writer:
        writer.write_table(table.data.table)
    table.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    for name in ("a.csv", "a.tsv", "a.parquet", "a.arrow", "saved", "saved_dict"):
        records = DatasetSource(str(tmp_path / name)).load()
        # "5" stays text in the CSV (not the number 5), and an empty cell is an empty input
        assert [{k: r[k] for k in ("instruction", "input", "output")} for r in records] == \
               [{k: r[k] for k in ("instruction", "input", "output")} for r in expected], name
    assert len(DatasetSource(str(tmp_path / "saved_dict"), split="test").load()) == 1


def test_bundled_chat_samples_load_in_their_formats():
    assert len(DatasetSource("bundled:chat/messages.jsonl").load()) == 48
    assert all("messages" in r for r in DatasetSource("bundled:chat/sharegpt.jsonl").load())
    assert all("completion" in r for r in DatasetSource("bundled:chat/prompt_completion.jsonl").load())


def test_a_registered_name_alone_reads_through_its_adapter():
    source = as_record_source("dolly")
    assert isinstance(source, Dolly) and source.location is None  # its hub dataset, as in a mixture
    assert isinstance(as_record_source("lima", format="messages"), Lima)
    with pytest.raises(NextaiError, match="format messages keeps a conversation's turns; dolly has none"):
        as_record_source("dolly", format="messages")


@pytest.mark.parametrize("name, text, message", [
    ("x.txt", "hello world; \n", r"x.txt: unsupported file type '.txt'"),
    ("x.jsonl", '{"messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Yo"}]}\n',
     r"x.jsonl:1 \[messages\]\[1\]: unknown role 'wizard'"),
    ("x.jsonl", '{"messages": [{"role": "user", "text": "Hi"}]}\n', r"x.jsonl:1 \[messages\]\[0\]: turn has no 'content'"),
    ("x.jsonl", '{"messages": "Hi"}\n', r"x.jsonl:1: field 'messages' must be a non-empty list of turns"),
    ("x.jsonl", '{"question": "a", "answer": "b"}\n', r"x.jsonl:1: cannot tell the format from the fields \('question', 'answer'\)"),
    ("x.jsonl", '{"prompt": "a", "completion": 3}\n', r"x.jsonl:1: field 'completion' must be a string, got int"),
    ("x.csv", "instruction,output\n\"a,b\n", r"x.csv: not a readable CSV file"),
    ("x.csv", "question,answer\na,b\n", r"x.csv row 1: cannot tell the format from the fields"),
])
def test_bad_input_names_file_row_field_or_role(tmp_path, name, text, message):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(NextaiError, match=message):
        DatasetSource(str(tmp_path / name)).load()


def test_bad_settings_fail_at_construction():
    with pytest.raises(NextaiError, match="data.format: unknown format 'chat'"):
        DatasetSource("x.jsonl", format="chat")
    with pytest.raises(NextaiError, match="data.columns: unknown key 'answer'"):
        DatasetSource("x.jsonl", columns={"answer": "output"})


def test_a_folder_of_json_files_that_is_a_saved_dataset_is_read_as_one(tmp_path):
    import datasets

    datasets.Dataset.from_list(ALPACA_ROWS).save_to_disk(str(tmp_path / "saved"))
    # it holds dataset_info.json: read as the saved dataset, not as a folder of JSON record files
    assert len(DatasetSource(str(tmp_path / "saved")).load()) == 2
