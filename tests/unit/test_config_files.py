"""Configs that extend others: the base is read first, then the config's own values; bad chains fail in one line."""

import pytest
import yaml

from nextai.config_files import expand_extends
from nextai.errors import NextaiError


def test_a_config_is_read_after_the_chain_it_extends(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  lora_r: 4\n  lora_alpha: 16\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\nmodel:\n  lora_r: 8\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "top.yaml").write_text("extends: ../mid.yaml\ntrainer:\n  max_steps: 3\n")
    argv = expand_extends(["fit", "--config", str(tmp_path / "sub" / "top.yaml"), "--model.lora_r", "2"])
    assert argv[0] == "fit" and argv[-2:] == ["--model.lora_r", "2"]
    configs = argv[2:-2:2]
    assert argv[1:-2:2] == ["--config"] * 3
    assert configs[0] == str((tmp_path / "base.yaml").resolve())
    assert yaml.safe_load(configs[1]) == {"model": {"lora_r": 8}}
    assert yaml.safe_load(configs[2]) == {"trainer": {"max_steps": 3}}
    assert expand_extends(["fit", f"--config={tmp_path / 'base.yaml'}"]) == ["fit", "--config",
                                                                             str(tmp_path / "base.yaml")]


def test_bad_chains_fail_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(NextaiError, match="comes back to a config already read"):
        expand_extends(["--config", str(tmp_path / "a.yaml")])
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(NextaiError, match="c.yaml: `extends: missing.yaml`: no such file"):
        expand_extends(["--config", str(tmp_path / "c.yaml")])
