"""`nextai plan` from the command line, in about a second where it can be.

With `--lengths` (a named distribution instead of the configured data) a plan needs three values of the training
config, `budget.limit`, `model.memory_budget` and `trainer.max_epochs`, and no model, tokenizer or trainer. They are
read here from the YAML configs (`extends` chains included) and the dotted overrides, in the order LightningCLI
merges them, so nothing imports Lightning or transformers (torch only for the samplers that cut `--bench` rows'
batches). Anything else (planning the configured data, which must be tokenized; an option this reader does not
know; `--help`, `--print_config`) goes through LightningCLI (`NextaiTrainer.plan`), which checks the whole config.

    nextai plan --config configs/v5.yaml --bench benchmarks/results/bench-70b-v5.json --lengths v5-like
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nextai.bench.plan import DDP_EFFICIENCY, plan_command
from nextai.clock import DEFAULT_BUDGET
from nextai.config_files import expand_chains
from nextai.errors import NextaiError
from nextai.units import parse_duration

# The options `nextai plan` reads without LightningCLI: its own arguments and the three training values it uses.
PLAN_ARGUMENTS = ("bench", "run", "lengths", "devices", "ddp_efficiency")
TRAINING_VALUES = ("budget.limit", "model.memory_budget", "trainer.max_epochs")


@dataclass(frozen=True)
class PlanArgs:
    bench: str | None
    run: str | None
    lengths: str
    epochs: int
    budget_s: float
    memory_budget: str | None
    devices: int
    ddp_efficiency: float


def main(argv: Sequence[str]) -> None:
    args = read_plan_args(argv)
    if args is None:
        from nextai.cli import run_lightning_cli

        run_lightning_cli(["plan", *argv])
        return
    plan_command(None, args.bench, args.run, args.lengths, args.epochs, args.budget_s, args.memory_budget,
                 args.devices, args.ddp_efficiency)


def read_plan_args(argv: Sequence[str]) -> PlanArgs | None:
    """The plan's arguments from the configs and overrides in `argv`, or None where LightningCLI must read them."""
    values = merged_values(expand_chains(argv))
    if values is None or values.get("lengths") is None or values.get("trainer.max_epochs") is None:
        return None  # without max_epochs Lightning's own default applies: LightningCLI's Trainer knows it
    epochs = as_int(values["trainer.max_epochs"], "trainer.max_epochs")
    memory_budget = values.get("model.memory_budget")
    return PlanArgs(
        bench=optional_str(values.get("bench")), run=optional_str(values.get("run")), lengths=str(values["lengths"]),
        epochs=epochs if epochs > 0 else 1,
        budget_s=parse_duration(str(values.get("budget.limit", DEFAULT_BUDGET)), "budget.limit"),
        memory_budget=None if memory_budget is None else str(memory_budget),
        devices=as_int(values.get("devices", 1), "devices"),
        ddp_efficiency=as_float(values.get("ddp_efficiency", DDP_EFFICIENCY), "ddp_efficiency"))


def merged_values(args: Sequence[str]) -> dict | None:
    """Configs and `--key value` / `--key=value` overrides merged left to right (a later one wins, as in
    LightningCLI), keyed by dotted name; None at the first argument this reader does not know."""
    import yaml

    values: dict = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            return None
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if index + 1 >= len(args):
                return None
            value = args[index + 1]
            index += 1
        index += 1
        if name == "config":
            config = read_config(value)
            if config is None:
                return None
            values.update(config)
        elif name in PLAN_ARGUMENTS or name in TRAINING_VALUES:
            try:
                values[name] = yaml.safe_load(value)
            except yaml.YAMLError:
                return None
        else:
            return None
    return values


def read_config(config: str) -> dict | None:
    """The values this reader knows from one config (a path or a YAML text), by dotted name; None where the file
    is not plain YAML of a mapping (LightningCLI then reports it)."""
    import yaml

    path = Path(config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8") if path.is_file() else config)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    flat = {name: data[name] for name in PLAN_ARGUMENTS if name in data}
    for name in TRAINING_VALUES:
        section, key = name.split(".")
        settings = data.get(section)
        if isinstance(settings, dict) and isinstance(settings.get("init_args"), dict):
            settings = settings["init_args"]  # `model: {class_path: ..., init_args: {...}}`
        if isinstance(settings, dict) and key in settings:
            flat[name] = settings[key]
    return flat


def optional_str(value) -> str | None:
    return None if value is None else str(value)


def as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NextaiError(f"{name}: expected a whole number, got {value!r}")
    return value


def as_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NextaiError(f"{name}: expected a number, got {value!r}")
    return float(value)
