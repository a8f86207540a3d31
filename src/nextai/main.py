"""`nextai`: the command line's entry point. It imports nothing heavy itself, so `nextai --help`, `--version` and
`compare` start in about a second; Lightning is imported only for the commands that read a whole training config
(`nextai.cli`), which `plan` given `--lengths` does not (`nextai.bench.plan_cli`).

    nextai fit --config configs/tiny.yaml [--model.lora_r 8] [--budget.limit 90m] [--print_config]
    nextai validate --config configs/tiny.yaml                 # the run's newest checkpoint
    nextai compare runs/v1 runs/v5 [--config compare.yaml]

Every option is written with underscores (`--model.lora_r`, `--eval_data`, `--timed_batches`), and every command
takes `--config FILE`. Bad input ends with one line `nextai: error: ...` and exit status 2 (`--debug` shows the
traceback).
"""

import argparse
import importlib
import os
import re
import sys
import time
from collections.abc import Sequence

from nextai import __version__
from nextai.clock import clear_job_start, mark_job_start, process_started_at
from nextai.errors import NextaiError
from nextai.quiet import configure_logging, quiet_libraries

# name -> (one line for `nextai --help`, "module:function" taking argv, or None for a LightningCLI subcommand)
COMMANDS: dict[str, tuple[str, str | None]] = {
    "fit": ("train: 4-bit base + LoRA, inside the wall-clock budget", None),
    "validate": ("validation loss of the run's newest checkpoint (or --ckpt_path)", None),
    "prepare": ("build the data mixture and show what the model will read (--show N)", None),
    "plan": ("hours, memory and budget of a run, from measured speed", "nextai.bench.plan_cli:main"),
    "evaluate": ("the challenge's HELM tasks on the trained model", None),
    "chat": ("talk to the trained model in the terminal", None),
    "serve": ("OpenAI-compatible and challenge HTTP API on the trained model", None),
    "export": ("the adapter, a merged model or a GGUF file, with a model card", None),
    "push": ("upload an export to the Hugging Face Hub", None),
    "bench": ("time training recipes on a LLaMA shape with random NF4 weights (GPU)", "nextai.bench.command:main"),
    "compare": ("the report's Table 8 and mean win rates over evaluated runs", "nextai.eval.compare:main"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: nextai COMMAND [--config FILE] [options]    (nextai COMMAND --help for its options)", "",
             "QLoRA fine-tuning of LLaMA-2 and any causal LM on one GPU inside a wall-clock budget.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (text, _) in COMMANDS.items()]
    lines += ["", "options:", "  --version  print the version", "  --debug    show the traceback of an error"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    # The budget counts the whole job: from the process start on the command line, from this call otherwise.
    mark_job_start((process_started_at() if argv is None else None) or time.monotonic())
    saved_argv = sys.argv
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    # Packs vary in length: expandable segments keep the CUDA caching allocator from fragmenting (read at CUDA
    # initialization, so set here, before anything touches the GPU; a value the user set wins).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    quiet_libraries()
    configure_logging()
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage())
            return
        if argv[0] == "--version":
            print(f"nextai {__version__}")
            return
        if argv[0] not in COMMANDS:
            raise NextaiError(f"unknown command '{argv[0]}'; commands: {', '.join(COMMANDS)} (nextai --help)")
        target = COMMANDS[argv[0]][1]
        if target is not None:
            module, function = target.split(":")
            getattr(importlib.import_module(module), function)(argv[1:])
        else:
            from nextai.cli import run_lightning_cli

            run_lightning_cli(argv)
    except Exception as err:
        reported = user_error(err)
        if debug or reported is None:
            raise
        print(f"nextai: error: {one_line(without_link_wrapper(str(reported)))}", file=sys.stderr)
        sys.exit(2)
    finally:
        clear_job_start()
        sys.argv = saved_argv


def user_error(err: BaseException) -> BaseException | None:
    """The error to report in one line, or None for a bug (a traceback). jsonargparse wraps errors raised while it
    builds a class from the config (`keep_last_n: 0`, a logger whose package is missing) in a ValueError: the
    cause is the message that names the value."""
    if isinstance(err, (NextaiError, argparse.ArgumentError)) or is_misconfiguration(err):
        return err
    if not isinstance(err, (ValueError, ImportError)):
        return None
    cause = err
    while cause is not None:
        if isinstance(cause, (NextaiError, ImportError)):
            return cause
        cause = cause.__cause__ or cause.__context__
    return err if raised_in(err, "jsonargparse") else None


def is_misconfiguration(err: BaseException) -> bool:
    """Lightning's error for a bad trainer setting (looked up only where Lightning was imported)."""
    exceptions = sys.modules.get("lightning.fabric.utilities.exceptions")
    return exceptions is not None and isinstance(err, exceptions.MisconfigurationException)


def raised_in(err: BaseException, package: str) -> bool:
    """Whether `err` was raised by code of `package` (the innermost frame of its traceback)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}{package}{os.sep}" in tb.tb_frame.f_code.co_filename


def without_link_wrapper(message: str) -> str:
    """jsonargparse wraps an error raised while computing a linked value in the link's description: keep ours."""
    return re.sub(r"^Call to compute_fn of link .*? failed: ", "", message, flags=re.DOTALL)


def one_line(message: str) -> str:
    """jsonargparse explains a bad value over several indented lines; users get them joined on one."""
    line = ""
    for part in (re.sub(r"^- +", "", p.strip()) for p in message.strip().splitlines()):  # its bullets, not --options
        if part:
            line += part if not line else (" " if line.endswith(":") else "; ") + part
    return line


if __name__ == "__main__":
    main()
