"""Options of the commands that have their own (`bench`, `compare`), written as LightningCLI's are: underscores
(`--timed_batches`; the dashed spelling stays accepted), and `--config FILE`, a YAML mapping of option names to
values that the command line overrides, as LightningCLI's `--config` does:

    # compare.yaml
    runs: [runs/v1, runs/v5, runs/base]
    names: [V1, V5, base]

    nextai compare --config compare.yaml --format csv
"""

import argparse
from pathlib import Path

from nextai.errors import NextaiError


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", help="YAML file of this command's options (the command line overrides it)")
    return parser


def option(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """`--name_with_underscores`, also accepted as `--name-with-dashes`."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*flags, dest=kwargs.pop("dest", name), **kwargs)


def parse_command_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`, with the values of `--config FILE` as defaults. A key that is no option of the command, or a
    file that is no YAML mapping, is one error naming the file and the key."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    appended = {}  # repeatable options from the file: the command line's occurrences replace them, not add
    if known.config:
        values = read_config(Path(known.config))
        actions = {}  # every spelling of each option (its flags and its destination), underscores for dashes
        for action in parser._actions:  # argparse's own registry of options
            if action.dest not in ("help", "config"):
                for name in (action.dest, *(flag.lstrip("-") for flag in action.option_strings)):
                    actions[name.replace("-", "_")] = action
        for key, value in values.items():
            action = actions.get(str(key).replace("-", "_"))
            if action is None:
                raise NextaiError(f"{known.config}: unknown option '{key}' for {parser.prog} (options: "
                                  f"{', '.join(sorted({a.dest for a in actions.values()}))})")
            if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
                value = value if isinstance(value, list) else [value]
            if isinstance(action, argparse._AppendAction):
                appended[action.dest] = value
                continue
            parser.set_defaults(**{action.dest: value})
            if not action.option_strings:
                action.nargs = "*"  # a positional given in the file may be left out on the command line
    args = parser.parse_args(argv)
    for dest, value in appended.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    return args


def read_config(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise NextaiError(f"--config {path}: file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise NextaiError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(values, dict):
        raise NextaiError(f"{path}: expected a mapping of option names to values, got {type(values).__name__}")
    return values
