"""Each task reads its source's own schema (the bundled samples) as HELM's scenarios do, and bad files fail with
the file and line."""

import csv
import json

import pytest

from nextai.errors import NextaiError
from nextai.eval.instances import split_instances
from nextai.eval.sources import SAMPLES_DIR, task_location
from nextai.eval.tasks import TASK_NAMES, build_task
from nextai.eval.tasks.bbq import BBQ
from nextai.eval.tasks.cnndm import CNNDailyMail
from nextai.eval.tasks.mmlu import MMLU
from nextai.eval.tasks.truthfulqa import TruthfulQA


def test_locations():
    assert task_location("mmlu", "cais/mmlu", "hub") == "cais/mmlu"
    assert task_location("bbq", "https://x", "bundled") == str(SAMPLES_DIR / "bbq")
    assert task_location("cnndm", "hub/id", "/data/eval") == "/data/eval/cnndm"
    assert task_location("cnndm", "hub/id", "hub", {"cnndm": "/mine"}) == "/mine"
    assert TASK_NAMES == ("mmlu", "bbq", "truthfulqa", "cnndm")
    with pytest.raises(NextaiError, match="unknown task 'mmlu2'"):
        build_task("mmlu2")


def test_mmlu_reads_the_original_csv_layout():
    scenarios = MMLU().scenarios(str(SAMPLES_DIR / "mmlu"))  # the sample holds 2 of the 17 subjects
    assert [s.name for s in scenarios] == ["mmlu:subject=philosophy", "mmlu:subject=high_school_geography"]
    train, evaluated = split_instances(scenarios[0].instances)
    assert len(train) == 5 and len(evaluated) == 5  # dev shots; val + test evaluated
    first = train[0]
    assert first.input == "Which branch of philosophy studies the nature of knowledge?"
    assert first.references == ("Ethics", "Epistemology", "Aesthetics", "Logic") and first.correct == (1,)
    with pytest.raises(NextaiError, match="no test file"):
        MMLU(["anatomy"]).scenarios(str(SAMPLES_DIR / "mmlu"))


def test_mmlu_bad_answer_letter_names_the_line(tmp_path):
    (tmp_path / "test").mkdir()
    with open(tmp_path / "test" / "philosophy_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["q1", "a", "b", "c", "d", "A"], ["q2", "a", "b", "c", "d", "F"]])
    with pytest.raises(NextaiError, match=r"philosophy_test.csv:2: answer 'F' is not one of the option letters"):
        MMLU().scenarios(str(tmp_path))


def test_bbq_letters_for_the_bias_scores():
    [scenario] = BBQ().scenarios(str(SAMPLES_DIR / "bbq"))
    train, evaluated = split_instances(scenario.instances)
    assert len(train) == 6 and len(evaluated) == 6  # 12 records: half kept for examples
    by_id = {i.id: i for i in scenario.instances}
    rude = by_id["Nationality:0"]  # "Who was rude to the staff?", ambiguous, stereotyped group: Brazil
    assert rude.input.endswith("\nQuestion: Who was rude to the staff?")
    assert rude.references[rude.correct[0]] == "Can't answer"
    assert (rude.extra["target"], rude.extra["non_target"], rude.extra["unknown"]) == ("A", "B", "C")
    assert rude.extra["negative"] and rude.extra["ambiguous"]


def test_bbq_record_without_label_names_the_line(tmp_path):
    record = json.loads((SAMPLES_DIR / "bbq" / "Age.jsonl").read_text().splitlines()[0])
    del record["label"]
    (tmp_path / "Age.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(NextaiError, match=r"Age.jsonl:1: record has no 'label' field"):
        BBQ().scenarios(str(tmp_path))
    with pytest.raises(NextaiError, match="BBQ data not found: .*nothing-here"):
        BBQ().scenarios(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NextaiError, match="holds none of BBQ's category files"):
        BBQ().scenarios(str(tmp_path / "empty"))


def test_truthfulqa_options_are_rotated_by_the_best_answers_first_letter():
    [scenario] = TruthfulQA().scenarios(str(SAMPLES_DIR / "truthfulqa"))
    train, evaluated = split_instances(scenario.instances)
    assert len(train) == 2 and len(evaluated) == 8  # the first 20% are examples
    gum = scenario.instances[0]
    # incorrect + best = 3 options; ord("I") % 3 = 73 % 3 = 1: rotated left by one
    assert gum.references == ("It sticks to your heart.", "It passes through your digestive system.",
                              "It stays in your stomach for seven years.")
    assert gum.correct == (1,)


def test_cnndm_keeps_50_to_150_word_examples_and_cuts_articles_to_512_words(tmp_path):
    long = " ".join(f"w{i}" for i in range(600))
    rows = {"train": [{"article": "short article", "highlights": "s", "id": "a"},
                      {"article": " ".join(["word"] * 80), "highlights": "kept", "id": "b"}],
            "validation": [{"article": long, "highlights": "line one\nline two", "id": "c"}],
            "test": [{"article": "tiny", "highlights": "t", "id": "d"}]}
    for split, records in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    [scenario] = CNNDailyMail().scenarios(str(tmp_path))
    assert [i.id for i in scenario.instances] == ["b", "c", "d"]
    assert len(scenario.instances[1].input.split()) == 512 and scenario.instances[1].references == (
        "line one line two",)
    bundled = CNNDailyMail().scenarios(str(SAMPLES_DIR / "cnndm"))[0]
    assert [len(part) for part in split_instances(bundled.instances)] == [6, 4]


def test_cnndm_missing_split_names_the_file(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"article": "a", "highlights": "b"}\n')
    with pytest.raises(NextaiError, match=r"no validation file .*validation.jsonl"):
        CNNDailyMail().scenarios(str(tmp_path))


def fake_hub(rows_by_split: dict):
    """Stands in for `datasets.load_dataset` (no network in tests): rows of a hub dataset, by (config, split)."""
    calls = []

    def load_hub(dataset, config, split):
        calls.append((dataset, config, split))
        return rows_by_split.get((config, split), [])

    return load_hub, calls


def test_mmlu_from_a_hub_dataset_in_the_cais_schema(monkeypatch):
    rows = {("philosophy", "dev"): [{"question": "Q0", "choices": ["a", "b"], "answer": 1, "subject": "p"}],
            ("philosophy", "test"): [{"question": "Q1", "choices": ["a", "b", "c"], "answer": 2, "subject": "p"}]}
    load_hub, calls = fake_hub(rows)
    monkeypatch.setattr("nextai.eval.tasks.mmlu.load_hub", load_hub)
    [scenario] = MMLU(["philosophy"]).scenarios("cais/mmlu")
    assert {(c, s) for _, c, s in calls} == {("philosophy", "dev"), ("philosophy", "validation"),
                                             ("philosophy", "test")}
    train, evaluated = split_instances(scenario.instances)
    assert train[0].references == ("a", "b") and train[0].correct == (1,)
    assert evaluated[0].input == "Q1" and evaluated[0].correct == (2,)
    monkeypatch.setattr("nextai.eval.tasks.mmlu.load_hub", fake_hub(
        {("philosophy", "dev"): [{"question": "Q", "choices": ["a"], "answer": 3}]})[0])
    with pytest.raises(NextaiError, match=r"dev row 0: answer 3 is not an index of its 1 choices"):
        MMLU(["philosophy"]).scenarios("cais/mmlu")


def test_truthfulqa_and_cnndm_from_hub_datasets(monkeypatch):
    questions = [{"question": f"Q{i}", "best_answer": "Yes", "incorrect_answers": ["No", "Maybe"]} for i in range(5)]
    monkeypatch.setattr("nextai.eval.tasks.truthfulqa.load_hub",
                        fake_hub({("generation", "validation"): questions})[0])
    [scenario] = TruthfulQA().scenarios("truthfulqa/truthful_qa")
    assert [i.split for i in scenario.instances] == ["train", "valid", "valid", "valid", "valid"]
    assert scenario.instances[0].references[scenario.instances[0].correct[0]] == "Yes."
    article = " ".join(["word"] * 60)
    monkeypatch.setattr("nextai.eval.tasks.cnndm.load_hub", fake_hub({
        ("3.0.0", "train"): [{"article": article, "highlights": "h", "id": "t"}],
        ("3.0.0", "test"): [{"article": "a b", "highlights": "x\ny", "id": "s"}]})[0])
    [scenario] = CNNDailyMail().scenarios("abisee/cnn_dailymail")
    assert [(i.id, i.split) for i in scenario.instances] == [("t", "train"), ("s", "test")]
    assert scenario.instances[1].references == ("x y",)
