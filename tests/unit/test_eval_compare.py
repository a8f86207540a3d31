"""`nextai compare`: Table 8's layout and mean win rates from the runs' evaluation results."""

import logging

import pytest

from nextai.errors import NextaiError
from nextai.eval.compare import main
from nextai.eval.evaluate import EvaluationSettings, merge_results, write_results
from nextai.eval.results import read_results

MODEL = {"base_model": "tiny", "adapter": "a", "checkpoint": None, "quantization": "4-bit", "device": "cpu"}


def task(title: str, **metrics) -> dict:
    return {"title": title, "data": "bundled", "metrics": metrics,
            "scenarios": {title: {"metrics": metrics, "instances": 3, "in_context_examples": 5}}}


def write_run(path, mmlu, bbq, truthfulqa, rouge_2):
    tasks = {"mmlu": task("MMLU", exact_match=mmlu), "bbq": task("BBQ", exact_match=bbq),
             "truthfulqa": task("TruthfulQA", exact_match=truthfulqa)}
    if rouge_2 is not None:
        tasks["cnndm"] = task("CNN/DailyMail", rouge_2=rouge_2, rouge_1=0.3)
    write_results(path, merge_results(None, MODEL, EvaluationSettings(limit=3), tasks))
    return str(path)


def test_table_8_layout_with_mean_win_rates(tmp_path, capsys):
    v1 = write_run(tmp_path / "v1", 0.70, 0.92, 0.74, 0.14)
    v2 = write_run(tmp_path / "v2", 0.71, 0.92, 0.76, 0.16)
    v3 = write_run(tmp_path / "v3", 0.71, 0.96, 0.54, None)  # CNN/DM not evaluated
    main([v1, v2, v3, "--names", "Version 1", "Version 2", "Version 3"])
    # MMLU: v1 0, v2 and v3 tie on top (1 + 0.5)/2 = 0.75; BBQ: v1 and v2 tie below v3: 0.25, 0.25, 1;
    # TruthfulQA: v2 1, v1 0.5, v3 0; ROUGE-2 (v3 left out): v2 1, v1 0.
    # means: v1 (0 + .25 + .5 + 0)/4 = 0.1875, v2 (.75 + .25 + 1 + 1)/4 = 0.75, v3 (.75 + 1 + 0)/3 = 0.5833
    assert capsys.readouterr().out == (
        "| Model | MMLU | BBQ | TruthfulQA | CNN/DailyMail ROUGE-2 | Mean win rate |\n"
        "|---|---|---|---|---|---|\n"
        "| Version 1 | 0.700 | 0.920 | 0.740 | 0.140 | 0.188 |\n"
        "| Version 2 | 0.710 | 0.920 | 0.760 | 0.160 | 0.750 |\n"
        "| Version 3 | 0.710 | 0.960 | 0.540 | – | 0.583 |\n")


def test_csv_output_and_file(tmp_path, capsys):
    a = write_run(tmp_path / "a", 0.5, 0.5, 0.5, 0.1)
    b = write_run(tmp_path / "b", 0.6, 0.4, 0.5, 0.2)
    main([a, b, "--format", "csv", "--output", str(tmp_path / "table.csv")])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "Model,MMLU,BBQ,TruthfulQA,CNN/DailyMail ROUGE-2,Mean win rate"
    assert printed.splitlines()[1] == "a,0.5,0.5,0.5,0.1,0.375"  # (0 + 1 + 0.5 + 0) / 4
    assert (tmp_path / "table.csv").read_text() == printed


def test_missing_results_and_mismatched_names(tmp_path):
    a = write_run(tmp_path / "a", 0.5, 0.5, 0.5, 0.1)
    with pytest.raises(NextaiError, match=r"no evaluation.json \(run nextai evaluate on it first\)"):
        main([a, str(tmp_path / "never-evaluated")])
    with pytest.raises(NextaiError, match="--names gives 1 names for 2 runs"):
        main([a, a, "--names", "only-one"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "evaluation.json").write_text("{not json")
    with pytest.raises(NextaiError, match=r"evaluation.json:1: not valid JSON"):
        main([str(tmp_path / "bad")])


def test_results_of_the_same_model_and_settings_are_merged(tmp_path):
    write_run(tmp_path, 0.5, 0.5, 0.5, 0.1)
    previous = read_results(tmp_path)
    merged = merge_results(previous, MODEL, EvaluationSettings(limit=3), {"bbq": task("BBQ", exact_match=0.9)})
    assert list(merged["tasks"]) == ["mmlu", "bbq", "truthfulqa", "cnndm"]
    assert merged["tasks"]["bbq"]["metrics"]["exact_match"] == 0.9
    assert merged["tasks"]["mmlu"] == previous["tasks"]["mmlu"]
    other = merge_results(previous, {**MODEL, "adapter": "b"}, EvaluationSettings(limit=3),
                          {"bbq": task("BBQ", exact_match=0.9)})
    assert list(other["tasks"]) == ["bbq"]  # another model: the earlier numbers are not mixed in


def test_runs_on_different_data_are_flagged(tmp_path, caplog):
    a = write_run(tmp_path / "a", 0.5, 0.5, 0.5, 0.1)
    b = write_run(tmp_path / "b", 0.6, 0.4, 0.5, 0.2)
    results = read_results(tmp_path / "b")
    results["tasks"]["mmlu"]["data"] = "cais/mmlu"
    write_results(tmp_path / "b", results)
    logger = logging.getLogger("nextai.eval.compare")
    logger.addHandler(caplog.handler)  # the CLI stops nextai's loggers propagating to the root (where caplog is)
    try:
        main([a, b])
    finally:
        logger.removeHandler(caplog.handler)
    assert "mmlu was evaluated on different data (bundled, cais/mmlu)" in caplog.text
