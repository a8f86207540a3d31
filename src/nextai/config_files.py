"""Configs that build on one another: a YAML config may start with `extends: base.yaml` (a path relative to it).

    nextai fit --config configs/v5.yaml        # configs/base.yaml first, then what v5.yaml changes

LightningCLI merges several `--config` files in order, each one's values over the last (`v5-fsdp.yaml` has always
been used that way); `extends` only writes that order into the file, so `configs/v1.yaml` … `v7.yaml` say what
differs from the report's recipe and nothing else. The base is read first, then the file without its `extends`.
"""

from collections.abc import Sequence
from pathlib import Path

from nextai.errors import NextaiError

EXTENDS = "extends"


def expand_extends(argv: Sequence[str]) -> list[str]:
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
