"""Configs that extend others: the base is read first, then the config's own values; bad chains fail in one line."""

import pytest
import yaml

from nextai.config_files import expand_config_args
from nextai.errors import NextaiError


def test_a_config_is_read_after_the_chain_it_extends(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  lora_r: 4\n  lora_alpha: 16\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\nmodel:\n  lora_r: 8\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "top.yaml").write_text("extends: ../mid.yaml\ntrainer:\n  max_steps: 3\n")
    argv = expand_config_args(["fit", "--config", str(tmp_path / "sub" / "top.yaml"), "--model.lora_r", "2"])
    assert argv[0] == "fit" and argv[-2:] == ["--model.lora_r", "2"]
    configs = argv[2:-2:2]
    assert argv[1:-2:2] == ["--config"] * 3
    assert configs[0] == str((tmp_path / "base.yaml").resolve())
    assert yaml.safe_load(configs[1]) == {"model": {"lora_r": 8}}
    assert yaml.safe_load(configs[2]) == {"trainer": {"max_steps": 3}}
    assert expand_config_args(["fit", f"--config={tmp_path / 'base.yaml'}"]) == ["fit", "--config",
                                                                             str(tmp_path / "base.yaml")]


def test_bad_chains_fail_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(NextaiError, match="comes back to a config already read"):
        expand_config_args(["--config", str(tmp_path / "a.yaml")])
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(NextaiError, match="c.yaml: `extends: missing.yaml`: no such file"):
        expand_config_args(["--config", str(tmp_path / "c.yaml")])


# The logger shorthand: words become the classes LightningCLI parses, on the command line and in config files.
TB, WANDB, MLFLOW = "nextai.loggers.TensorBoard", "nextai.loggers.Wandb", "nextai.loggers.MLflow"


@pytest.mark.parametrize("given, parsed", [
    (["--trainer.logger", "tensorboard"], ["--trainer.logger", TB]),
    (["--trainer.logger", "WandB"], ["--trainer.logger", WANDB]),
    (["--trainer.logger=mlflow"], [f"--trainer.logger={MLFLOW}"]),
    (["--trainer.logger", "[tensorboard, wandb]"], ["--trainer.logger", f'["{TB}", "{WANDB}"]']),
    (["--trainer.logger", "[csv, mlflow]"], ["--trainer.logger", f'["{MLFLOW}"]']),
    (["--trainer.logger", "csv"], ["--trainer.logger", "true"]),
    (["--trainer.logger", "[csv]"], ["--trainer.logger", "true"]),
    (["--trainer.logger", '{"class_path": "wandb", "init_args": {"project": "p"}}'],
     ["--trainer.logger", f'{{"class_path": "{WANDB}", "init_args": {{"project": "p"}}}}']),
    # Anything else reaches LightningCLI untouched: off, Lightning's classes, other options' values.
    (["--trainer.logger", "false"], ["--trainer.logger", "false"]),
    (["--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "tb"],
     ["--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "tb"]),
    (["--data.source", "wandb"], ["--data.source", "wandb"]),
])
def test_logger_shorthand_on_the_command_line(given, parsed):
    assert expand_config_args(["fit", *given]) == ["fit", *parsed]


def test_logger_shorthand_in_config_files(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("trainer:\n  max_steps: 3\n  logger: false\n")
    short = tmp_path / "short.yaml"
    short.write_text("extends: plain.yaml\ntrainer:\n  logger: [tensorboard, {class_path: wandb, init_args: "
                     "{offline: true}}]\n")
    top = tmp_path / "top.yaml"
    top.write_text("fit:\n  trainer:\n    logger: mlflow\n")
    argv = expand_config_args(["fit", "--config", str(short), "--config", str(top), "--config", str(plain)])
    assert argv[1::2] == ["--config"] * 4
    base, rewritten, nested, unchanged = argv[2::2]
    assert base == str(plain.resolve()) and unchanged == str(plain)  # files without the shorthand stay paths
    assert yaml.safe_load(rewritten) == {"trainer": {"logger": [
        TB, {"class_path": WANDB, "init_args": {"offline": True}}]}}
    assert yaml.safe_load(nested) == {"fit": {"trainer": {"logger": MLFLOW}}}
