"""Bad input ends with one line naming the culprit, exit status 2, and nothing written."""

from pathlib import Path

import pytest

from nextai.cli import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def run_failing(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("nextai: error: "), err
    return err[0]


def test_missing_data_file(tmp_path, capsys):
    run = tmp_path / "run"
    line = run_failing(["fit", "--config", TINY, "--data.source", str(tmp_path / "nope.jsonl"),
                        "--trainer.default_root_dir", str(run)], capsys)
    assert f"data file not found: {tmp_path / 'nope.jsonl'}" in line
    assert not run.exists()


def test_malformed_jsonl_line(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a" "output": "b"}\n')
    line = run_failing(["fit", "--config", TINY, "--data.source", str(data),
                        "--trainer.default_root_dir", str(tmp_path / "run")], capsys)
    assert f"{data}:2: not valid JSON" in line
    assert not (tmp_path / "run").exists()


def test_unknown_preset(tmp_path, capsys):
    line = run_failing(["fit", "--config", TINY, "--model.lora_targets", "attn",
                        "--trainer.default_root_dir", str(tmp_path / "run")], capsys)
    assert "model.lora_targets: unknown preset 'attn'" in line


def test_bad_budget(tmp_path, capsys):
    line = run_failing(["fit", "--config", TINY, "--budget.limit", "24hours",
                        "--trainer.default_root_dir", str(tmp_path / "run")], capsys)
    assert "budget.limit: cannot read '24hours'" in line


def test_unknown_key(tmp_path, capsys):
    line = run_failing(["fit", "--config", TINY, "--model.lora_rank", "8"], capsys)
    assert "--model.lora_rank" in line


def test_plan_needs_measurements(capsys):
    line = run_failing(["plan", "--config", TINY, "--lengths", "fixed:100x10"], capsys)
    assert "needs measured step times" in line


def test_plan_on_the_committed_70b_table(capsys):
    table = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "bench-70b-v5.json"
    main(["plan", "--config", TINY, "--bench", str(table), "--lengths", "v5-like", "--trainer.max_epochs", "1",
          "--budget.limit", "24h"])
    out = capsys.readouterr().out
    assert "fastest that fits: bench fast (v5-like), 2.7 h" in out
