"""`nextai plan`'s own reader of the training config: the three values it needs, merged as LightningCLI merges
configs and overrides, and a hand-over to LightningCLI for anything it does not know."""

from pathlib import Path

import pytest

from nextai.bench.plan_cli import read_plan_args
from nextai.errors import NextaiError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_extends_chains_and_overrides_merge_left_to_right(tmp_path):
    base = write(tmp_path / "base.yaml", "trainer:\n  max_epochs: 3\nbudget:\n  limit: 12h\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmodel:\n  class_path: nextai.modules.QLoRAModule\n"
                                           "  init_args:\n    memory_budget: 36.5GiB\n")
    args = read_plan_args(["--config", child, "--lengths", "v5-like", "--budget.limit=2h"])
    assert (args.epochs, args.budget_s, args.memory_budget, args.lengths) == (3, 7200, "36.5GiB", "v5-like")
    # a config given after an override wins over it, as in LightningCLI
    later = write(tmp_path / "later.yaml", "budget:\n  limit: 90m\n")
    assert read_plan_args(["--config", child, "--budget.limit", "2h", "--config", later,
                           "--lengths", "v5-like"]).budget_s == 5400


def test_the_shipped_v5_config_is_read_without_lightning():
    args = read_plan_args(["--config", str(CONFIGS / "v5.yaml"), "--lengths", "v5-like", "--bench", "t.json"])
    assert (args.epochs, args.budget_s, args.memory_budget, args.bench, args.devices) == (1, 86400, None, "t.json", 1)


@pytest.mark.parametrize("argv", [
    ["--lengths", "v5-like"],  # no max_epochs: Lightning's own default decides
    ["--config", str(CONFIGS / "v5.yaml")],  # the configured data: it must be tokenized
    ["--config", str(CONFIGS / "v5.yaml"), "--lengths", "v5-like", "--model.lora_r", "8"],  # checked by LightningCLI
    ["--config", str(CONFIGS / "v5.yaml"), "--lengths", "v5-like", "--help"],
    ["--config", str(CONFIGS / "v5.yaml"), "--lengths"],
    ["--config", "/no/such/config.yaml", "--lengths", "v5-like", "--trainer.max_epochs", "1"],
])
def test_anything_else_goes_to_lightningcli(argv):
    assert read_plan_args(argv) is None


@pytest.mark.parametrize("override, message", [
    (["--budget.limit", "24hours"], "budget.limit: cannot read '24hours'"),
    (["--trainer.max_epochs", "one"], "trainer.max_epochs: expected a whole number, got 'one'"),
    (["--devices", "2.5"], "devices: expected a whole number, got 2.5"),
    (["--ddp_efficiency", "most"], "ddp_efficiency: expected a number, got 'most'"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(NextaiError, match=message):
        read_plan_args(["--config", str(CONFIGS / "v5.yaml"), "--lengths", "v5-like", *override])


def test_the_reader_knows_the_plan_subcommands_arguments_and_defaults():
    """The options read here are NextaiTrainer.plan's own (LightningCLI builds the subcommand from its signature)."""
    import inspect

    from nextai.bench.plan_cli import PLAN_ARGUMENTS
    from nextai.trainer import NextaiTrainer

    parameters = inspect.signature(NextaiTrainer.plan).parameters
    assert set(PLAN_ARGUMENTS) == set(parameters) - {"self", "model", "datamodule"}
    args = read_plan_args(["--config", str(CONFIGS / "v5.yaml"), "--lengths", "v5-like"])
    assert (args.bench, args.run, args.devices, args.ddp_efficiency) == tuple(
        parameters[name].default for name in ("bench", "run", "devices", "ddp_efficiency"))
