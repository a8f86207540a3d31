"""Source adapters: every registered source on its bundled sample (native schema), the registry, schema errors."""

import json

import pytest

from nextai.data.samples import SAMPLES_DIR
from nextai.data.sources import LLM_GENERATED, SOURCES, OpenPlatypus, source_class
from nextai.data.sources.conversation import last_exchange, transcript
from nextai.data.sources.guanaco import split_turns
from nextai.data.sources.multi_news import first_words
from nextai.errors import NextaiError


def sample(name: str) -> str:
    return "bundled:alpaca_tiny.jsonl" if name == "alpaca" else f"bundled:sources/{name}.jsonl"


def read(name: str, **options):
    return SOURCES[name](sample(name), **options).read()


def by_instruction(records, start: str) -> dict:
    (record,) = [r for r in records if r["instruction"].startswith(start)]
    return record


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# (native records in the sample, records the adapter keeps): every sample has at least one record to skip or
# filter where the source has such records, so the counts show each adapter's rule at work.
EXPECTED = {
    "alpaca": (304, 304), "arb": (3, 3), "codegen": (4, 4), "dolly": (5, 5), "faithdial": (4, 4),
    "flan_cot": (3, 3), "guanaco": (3, 3), "lima": (4, 3), "multi_news": (3, 3), "platypus": (8, 6),
    "prm800k": (3, 2), "reclor": (3, 2), "scienceqa": (4, 4), "theoremqa": (4, 3), "tigerbot_leetcode": (3, 3),
}


def test_every_registered_source_has_a_sample_and_an_expectation():
    assert set(EXPECTED) == set(SOURCES)
    for name in SOURCES:
        assert (SAMPLES_DIR / sample(name).removeprefix("bundled:")).is_file(), name


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_adapter_reads_its_sample(name):
    result = read(name)
    assert (result.rows, len(result.records)) == EXPECTED[name]
    assert result.rows == len(result.records) + result.filtered + result.unusable
    for record in result.records:
        assert set(record) == {"instruction", "input", "output", "source"}
        assert record["source"] == name
        assert record["instruction"].strip() and record["output"].strip()
        assert record["instruction"] == record["instruction"].strip()


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(NextaiError, match=r"unknown data source 'dollyy'; known sources: alpaca, arb, codegen, "
                                          r"dolly, .*tigerbot_leetcode$"):
        source_class("dollyy")


# ------------------------------------------------------------------------------------------------ mappings
def test_dolly_context_becomes_the_input():
    record = by_instruction(read("dolly").records, "Based on the passage")
    assert record["input"].startswith("Construction of the stone bridge began in 1821.")
    assert record["output"] == "The bridge was finished in 1829."


def test_scienceqa_letters_the_options_and_ends_with_the_answer():
    records = read("scienceqa").records
    conductor = by_instruction(records, "Which of these objects is a conductor")
    assert conductor["instruction"].endswith("\nA. rubber band\nB. copper wire\nC. wooden spoon")
    assert conductor["output"].endswith("\n\nThe answer is B. copper wire")
    no_solution = by_instruction(records, "Which word would you find")
    assert no_solution["output"] == "The answer is A. hill"
    assert by_instruction(records, "What does a plant")["input"].startswith("Plants make sugar")  # the hint


def test_reclor_answers_with_the_letter_and_skips_unlabeled_questions():
    result = read("reclor")
    assert result.unusable == 1  # label -1, as in the test split
    record = by_instruction(result.records, "Which one of the following must be true?")
    assert record["output"] == "B"
    assert record["instruction"].endswith("D. The review session was optional.\nChoose A, B, C or D.")
    assert record["input"].startswith("Every student who passed")


def test_prm800k_follows_the_chosen_path_and_needs_a_solution():
    result = read("prm800k")
    assert result.unusable == 1  # finish_reason found_error
    remainder = by_instruction(result.records, "What is the remainder")
    assert remainder["output"] == "7 times 14 is 98.\n100 minus 98 is 2, so the remainder is 2.\n# Answer\n\n2"
    solve = by_instruction(result.records, "Solve for")
    assert "Dividing both sides by 3 gives $x = 5$." in solve["output"]  # the labeler's own step
    assert "So $x = 4$." not in solve["output"]  # the rejected completion


def test_theoremqa_writes_answers_as_text_and_skips_questions_with_a_figure():
    result = read("theoremqa")
    assert result.unusable == 1
    outputs = {r["instruction"].split("?")[0]: r["output"] for r in result.records}
    assert sorted(outputs.values()) == ["0.1667", "True", "[2, 3]"]
    assert "Relevant Theorem: The probability" in by_instruction(result.records, "A fair")["instruction"]


def test_arb_reads_both_spellings_and_falls_back_to_the_final_answer():
    records = read("arb").records
    law = by_instruction(records, "A landlord")
    assert "\nA. Damages for the cost of repainting\n" in law["instruction"] and law["output"] == "A"
    assert by_instruction(records, "Find all real numbers")["output"].startswith("The quadratic factors")
    assert by_instruction(records, "A ball is dropped")["output"] == "2"


def test_conversations_keep_the_last_exchange_with_the_earlier_turns_as_input():
    bakery = by_instruction(read("guanaco").records, "Something shorter")
    assert bakery["input"] == ('User: Can you suggest a name for a small bakery?\n'
                               'Assistant: How about "The Rising Loaf"?')
    assert bakery["output"] == 'Try "Crumb" or "Knead".'
    lima = read("lima")
    assert lima.unusable == 1  # a prompt without an answer
    juggle = by_instruction(lima.records, "And after that?")
    assert juggle["input"].startswith("User: I want to learn to juggle.")
    assert "\nAssistant: Begin with one ball" in juggle["input"]


def test_faithdial_puts_the_knowledge_and_history_in_the_input():
    bees = by_instruction(read("faithdial").records, "How do they tell")
    assert bees["input"].startswith("Knowledge: Honey bees perform a waggle dance")
    assert bees["input"].endswith("Conversation so far:\nUser: I keep bees in my garden.\n"
                                  "Assistant: That sounds lovely! Bees are fascinating insects.")
    assert bees["output"].startswith("Honey bees communicate")


def test_multi_news_joins_the_articles_and_strips_the_dash():
    record = read("multi_news").records[0]
    assert "|||||" not in record["input"] and "\n\nOfficials said" in record["input"]
    assert record["output"].startswith("The city library will begin")
    short = read("multi_news", max_words=5).records[0]
    assert short["input"] == "The city library will open ..."


def test_helpers():
    assert first_words("a b\n\nc d e", 3) == "a b\n\nc ..." and first_words("a b c", 3) == "a b c"
    assert split_turns("### Human: hi### Assistant: hello") == ["hi", "hello"]
    assert split_turns("### Assistant: hello") is None and split_turns("preamble ### Human: hi") is None
    assert transcript(["a", "b", "c"]) == "User: a\nAssistant: b\nUser: c"
    assert last_exchange(["q"]) is None
    assert last_exchange(["q1", "a1", "q2"]) == ("q1", "", "a1")  # a trailing question has no answer to learn


# ------------------------------------------------------------------------------------------------ Filtering Platypus
def test_platypus_drops_its_llm_generated_origins_by_default():
    assert LLM_GENERATED == ("airoboros", "leetcode_ne")
    result = read("platypus")
    assert result.filtered == 2 and not result.notes
    outputs = " ".join(r["output"] + r["instruction"] for r in result.records)
    assert "pirate" not in outputs and "is_palindrome" not in outputs


def test_platypus_filter_list_is_overridable():
    assert len(read("platypus", llm_generated=[]).records) == 8
    only_reclor = read("platypus", llm_generated=["reclor"])
    assert only_reclor.filtered == 1 and not any(r["output"] == "C" for r in only_reclor.records)
    typo = read("platypus", llm_generated=["airobros"])
    assert typo.filtered == 0 and "llm_generated lists 'airobros', which no record has" in typo.notes[0]


def test_platypus_fingerprint_follows_the_filter_list():
    default = OpenPlatypus(sample("platypus")).fingerprint()
    assert OpenPlatypus(sample("platypus"), llm_generated=[]).fingerprint() != default
    assert OpenPlatypus(sample("platypus")).fingerprint() == default


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_schema_names_the_missing_field_and_the_record(tmp_path):
    path = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "a", "context": "", "response": "b", "category": "open_qa"},
        {"instruction": "a", "context": "", "answer": "b", "category": "open_qa"},
    ])
    with pytest.raises(NextaiError, match=r"dolly.jsonl:2: dolly record has no 'response' field "
                                          r"\(it has: 'instruction', 'context', 'answer', 'category'\)"):
        SOURCES["dolly"](path).load()


def test_platypus_without_data_source_names_it(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "a", "input": "", "output": "b"}])
    with pytest.raises(NextaiError, match=r"p.jsonl:1: platypus record has no 'data_source' field"):
        SOURCES["platypus"](path).load()


def test_wrong_type_and_nested_field_are_named(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"question": "q", "choices": "A or B", "answer": 0}])
    with pytest.raises(NextaiError, match=r"s.jsonl:1: scienceqa field 'choices' must be a list of strings, got str"):
        SOURCES["scienceqa"](path).load()
    path = write_jsonl(tmp_path / "prm.jsonl", [{"question": {"text": "q"}, "label": {"steps": [],
                                                                                       "finish_reason": "solution"}}])
    with pytest.raises(NextaiError, match=r"prm.jsonl:1 \[question\]: prm800k record has no 'problem' field "
                                          r"\(it has: 'text'\)"):
        SOURCES["prm800k"](path).load()


def test_either_spelling_is_named_when_both_are_missing(tmp_path):
    path = write_jsonl(tmp_path / "arb.jsonl", [{"Statement": "q", "Solution": "s"}])
    with pytest.raises(NextaiError, match=r"arb record has no 'Problem Statement' or 'Problem_Statement' field"):
        SOURCES["arb"](path).load()


def test_unreachable_hub_dataset_names_it_and_the_way_out():
    # The tests run with the hub offline (conftest), as CI and this machine do.
    with pytest.raises(NextaiError, match=r"lima: cannot load 'GAIR/lima' \(train.jsonl\) from the hub: .*"
                                          r"point `location` at the file or directory"):
        SOURCES["lima"]().load()


def test_fingerprint_follows_the_file(tmp_path):
    rows = [{"instruction": "a", "context": "", "response": "b"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    before = SOURCES["dolly"](path).fingerprint()
    write_jsonl(tmp_path / "d.jsonl", rows + rows)
    assert SOURCES["dolly"](path).fingerprint() != before
    assert SOURCES["dolly"]().fingerprint() != SOURCES["dolly"](split="test").fingerprint()


# ------------------------------------------------------------------------------------------------ the hub path
# No hub here or in CI: the downloads are replaced by local files, the reading and mapping are the real code.
def test_hub_files_are_read_one_by_one_and_keep_their_line_numbers(monkeypatch):
    import huggingface_hub

    asked = []

    def download(repo_id, filename, repo_type, revision):
        asked.append((repo_id, filename, repo_type, revision))
        return str(SAMPLES_DIR / "sources" / "prm800k.jsonl")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    result = SOURCES["prm800k"]().read()
    assert asked == [("tasksource/PRM800K", "phase1_train.jsonl", "dataset", None),
                     ("tasksource/PRM800K", "phase2_train.jsonl", "dataset", None)]
    assert (result.rows, len(result.records)) == (6, 4)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(SAMPLES_DIR / "sources" / "arb.jsonl"))
    with pytest.raises(NextaiError, match=r"^GAIR/lima/train.jsonl:1: lima record has no 'conversations' field"):
        SOURCES["lima"]().load()


def test_hub_rows_with_null_optional_columns(monkeypatch):
    import datasets

    rows = [{"instruction": "a", "context": None, "response": "b", "category": "open_qa"},
            {"instruction": "c", "context": "passage", "response": "d", "category": "closed_qa"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.Dataset.from_list(rows))
    records = SOURCES["dolly"]().load()
    assert [(r["input"], r["output"]) for r in records] == [("", "b"), ("passage", "d")]
    rows[0]["response"] = None
    with pytest.raises(NextaiError, match=r"databricks/databricks-dolly-15k\[train\] row 0: dolly field 'response' "
                                          r"is empty \(null\)"):
        SOURCES["dolly"]().load()
