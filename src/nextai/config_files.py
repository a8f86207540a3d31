"""Configs that build on one another: a YAML config may start with `extends: base.yaml` (a path relative to it).

    nextai fit --config configs/v5.yaml        # configs/base.yaml first, then what v5.yaml changes

LightningCLI merges several `--config` files in order, each one's values over the last (`v5-fsdp.yaml` has always
been used that way); `extends` only writes that order into the file, so `configs/v1.yaml` … `v7.yaml` say what
differs from the report's recipe and nothing else. The base is read first, then the file without its `extends`.

`expand_config_args` also rewrites the logger shorthand (`--trainer.logger tensorboard`,
`trainer: {logger: [tensorboard, wandb]}`; the words are nextai.loggers.SHORTHANDS) into the class paths
LightningCLI parses.
"""

import json
from collections.abc import Sequence
from pathlib import Path

from nextai.errors import NextaiError

EXTENDS = "extends"


def expand_config_args(argv: Sequence[str]) -> list[str]:
    """`argv` as LightningCLI reads it: configs that extend others expanded (`expand_chains`), then the logger
    shorthand words rewritten into class paths (`--trainer.logger` and `trainer.logger` in the configs)."""
    expanded = expand_chains(argv)
    rewritten: list[str] = []
    for index, arg in enumerate(expanded):
        option = expanded[index - 1] if index else ""
        if option == "--config":
            arg = config_with_logger_classes(arg)
        elif option == LOGGER_OPTION:
            arg = logger_argument(arg)
        elif arg.startswith(LOGGER_OPTION + "="):
            arg = f"{LOGGER_OPTION}={logger_argument(arg.split('=', 1)[1])}"
        rewritten.append(arg)
    return rewritten


def expand_chains(argv: Sequence[str]) -> list[str]:
    """`argv` with every `--config FILE` whose file extends another replaced by the chain, base first."""
    expanded: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--config" and index + 1 < len(args):
            expanded += [item for path in chain(Path(args[index + 1])) for item in ("--config", path)]
            index += 2
            continue
        if arg.startswith("--config="):
            expanded += [item for path in chain(Path(arg.split("=", 1)[1])) for item in ("--config", path)]
        else:
            expanded.append(arg)
        index += 1
    return expanded


def chain(path: Path, seen: tuple[Path, ...] = ()) -> list[str]:
    """The configs to read for `path`, base first: a path, or a file's text without its `extends` key."""
    import yaml

    if not path.is_file():
        return [str(path)]  # not a file (a YAML string, or a missing path): LightningCLI reports it as before
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return [str(path)]  # LightningCLI reports the syntax error with its own line numbers
    if not isinstance(data, dict) or EXTENDS not in data:
        return [str(path)]
    base = data.pop(EXTENDS)
    if not isinstance(base, str):
        raise NextaiError(f"{path}: `{EXTENDS}` must name one config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise NextaiError(f"{path}: `{EXTENDS}: {base}` comes back to a config already read")
    if not base_path.is_file():
        raise NextaiError(f"{path}: `{EXTENDS}: {base}`: no such file {base_path}")
    rest = yaml.safe_dump(data, sort_keys=False) if data else "{}"
    return [*chain(base_path, (*seen, path.resolve())), rest]


# ---------------------------------------------------------------------------------------------- logger shorthand
LOGGER_OPTION = "--trainer.logger"


def logger_classes(value):
    """A `trainer.logger` value with its shorthand words (`tensorboard`, `[tensorboard, wandb]`, `class_path: wandb`)
    replaced by class paths; `csv` alone is `true` (the run's own metrics.csv), in a list it is dropped. Anything
    else is returned as it is."""
    from nextai.loggers import SHORTHANDS

    def word(item):
        return item.lower() if isinstance(item, str) and item.lower() in SHORTHANDS else None

    if isinstance(value, dict) and word(value.get("class_path")):
        if SHORTHANDS[word(value["class_path"])] is None:
            return True
        return {**value, "class_path": SHORTHANDS[word(value["class_path"])]}
    if word(value):
        return SHORTHANDS[word(value)] or True
    if isinstance(value, list) and any(word(item) or isinstance(item, dict) for item in value):
        items = [logger_classes(item) for item in value]
        items = [item for item in items if item is not True]
        return items or True
    return value


def logger_argument(text: str) -> str:
    """The command-line value of `--trainer.logger` with the shorthand rewritten (YAML flow syntax kept)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    rewritten = logger_classes(value)
    if rewritten is value or rewritten == value:
        return text
    if isinstance(rewritten, str):
        return rewritten
    return "true" if rewritten is True else json.dumps(rewritten)


def config_with_logger_classes(config: str) -> str:
    """A `--config` value (a path or a YAML text) with `trainer.logger` shorthand rewritten: the same path when there
    is none, else the rewritten text."""
    import yaml

    try:
        text = Path(config).read_text(encoding="utf-8") if Path(config).is_file() else config
    except OSError:  # a YAML text too long for a file name
        text = config
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return config
    if not isinstance(data, dict):
        return config
    changed = False
    for section in (data, *(v for v in data.values() if isinstance(v, dict))):  # top level, or under a subcommand
        trainer = section.get("trainer")
        if isinstance(trainer, dict) and "logger" in trainer:
            rewritten = logger_classes(trainer["logger"])
            if rewritten is not trainer["logger"] and rewritten != trainer["logger"]:
                trainer["logger"] = rewritten
                changed = True
    return yaml.safe_dump(data, sort_keys=False) if changed else config
