"""Bad input ends with one line naming the culprit, exit status 2, and nothing written."""

import sys
from pathlib import Path

import pytest
import torch

from nextai.main import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
ON_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA-only options are valid on a GPU machine")


def run_failing(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    # one line besides nextai's own progress lines (INFO, logged before the input was found bad)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO ")]
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


def test_plan_reads_its_config_as_lightningcli_does(capsys, monkeypatch):
    """With --lengths, plan reads budget, memory cap and epochs itself (no Lightning): the same plan LightningCLI's
    NextaiTrainer.plan prints from the same arguments."""
    from nextai.cli import run_lightning_cli

    monkeypatch.setattr(sys, "argv", ["nextai"])
    table = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "bench-70b-v5.json"
    args = ["plan", "--config", TINY, "--bench", str(table), "--lengths", "fixed:300x200", "--budget.limit", "30m",
            "--model.memory_budget", "38GiB", "--devices", "2", "--trainer.max_epochs", "3"]
    main(args)
    quick = capsys.readouterr().out
    run_lightning_cli(args)
    assert capsys.readouterr().out == quick
    words = " ".join(quick.split())  # rich wraps the title
    assert "3 epoch(s); budget 0.5 h, memory cap 38.0 GiB" in words and "x 2 GPUs (projected)" in words


@pytest.mark.parametrize("override, message", [
    (["--data.cutoff_len", "0"], "cutoff_len must be a positive number of tokens, got 0"),
    (["--data.micro_batch_size", "-1"], "data.batch_size (8) and data.micro_batch_size (-1) must be positive"),
    (["--data.val_size", "-3"], "data.val_size must be a fraction in [0, 1) or a whole count, got -3"),
    (["--model.lora_r", "0"], "model.lora_r must be a positive integer, got 0"),
    (["--model.learning_rate", "-1"], "model.learning_rate must be positive, got -1.0"),
    (["--model.memory_budget", "12XB"], "model.memory_budget: cannot read '12XB' as a memory size"),
    pytest.param(["--model.memory_budget", "30GiB"], "model.memory_budget needs a CUDA GPU",
                 marks=ON_GPU),
    pytest.param(["--model.liger_kernels", "true"], "model.liger_kernels needs a CUDA GPU",
                 marks=ON_GPU),
    pytest.param(["--model.offload_activations", "true"], "model.offload_activations needs a CUDA GPU",
                 marks=ON_GPU),
    pytest.param(["--model.attn_implementation", "flash_attention_2"], "flash_attention_2 needs a CUDA GPU",
                 marks=ON_GPU),
    (["--data.packing", "true", "--data.pack_length", "8"], "data.pack_length 8 is shorter than data.cutoff_len"),
])
def test_impossible_values_and_cuda_only_options_write_nothing(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    line = run_failing(["fit", "--config", TINY, "--trainer.default_root_dir", str(run), *override], capsys)
    assert message in line
    assert not run.exists()


@pytest.mark.parametrize("name, text, message", [
    # a path is a path: jsonargparse used to read these files' text as the value of data.source
    ("alpaca.csv", "instruction,output\n" + "".join(f"q{i},a{i}\n" for i in range(40)) + '"open,quote\n',
     "alpaca.csv: not a readable CSV file"),
    ("notes.txt", "hello world; \n", "notes.txt: unsupported file type '.txt'"),
    ("chat.jsonl", '{"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "Yo"}]}\n',
     "chat.jsonl:1 [messages][1]: unknown role 'robot'"),
    ("qa.jsonl", '{"question": "a", "answer": "b"}\n', "qa.jsonl:1: cannot tell the format from the fields"),
])
def test_bad_data_files_in_any_format_write_nothing(tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    line = run_failing(["fit", "--config", TINY, "--data.source", str(tmp_path / name),
                        "--trainer.default_root_dir", str(run)], capsys)
    assert message in line
    assert not run.exists()


@pytest.mark.parametrize("override, message", [
    (["--data.format", "chat"], 'Parser key "data.format": Expected a typing.Literal'),
    (["--data.columns", "{answer: output}"], "data.columns: unknown key 'answer'"),
    (["--data.source", "bundled:chat/messages.jsonl", "--data.chat_template", "chatml"],
     "has no <|im_start|> or <|im_end|> token; choose a template written in its own tokens"),
    (["--data.source", "bundled:chat/messages.jsonl"],
     "has no chat template: set data.chat_template to one of llama-2-chat, chatml"),
    (["--model.base_model", "missing/model.gguf"], "model.base_model: GGUF file not found: missing/model.gguf"),
])
def test_bad_format_settings_write_nothing(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    line = run_failing(["fit", "--config", TINY, "--trainer.default_root_dir", str(run),
                        "--data.source", "bundled:alpaca_tiny.jsonl", *override], capsys)
    assert message in line
    assert not run.exists()


@pytest.mark.parametrize("argv, message", [
    (["bench", "--allocator-cap", "lots"], "--allocator-cap: cannot read 'lots' as a memory size"),
    # named before the GPU is looked for (on a GPU machine: before a 70B base is loaded for each child)
    (["bench", "--lengths", "fixed:x"], "--lengths fixed:x: expected fixed:LENGTHxCOUNT"),
    (["bench", "--lengths", "fixed:0x400"], "--lengths fixed:0x400: LENGTH and COUNT must be at least 1"),
    (["bench", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["compare", "--config", "/nope.yaml"], "--config /nope.yaml: file not found"),
    (["plan", "--config", TINY, "--run", "runs/x", "--lengths", "fixed:bad"], "--lengths fixed:bad: expected"),
])
def test_the_one_line_keeps_the_option_it_names(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"nextai: error: {message}")


def test_jsonargparse_bullets_join_on_one_line():
    from nextai.main import one_line

    assert one_line("Does not validate:\n  - Expected an int. Got: x\n  - Expected None. Got: x") == \
        "Does not validate: Expected an int. Got: x; Expected None. Got: x"
