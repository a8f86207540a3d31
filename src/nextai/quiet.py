"""What the terminal shows: nextai's own log lines on stderr, and the libraries' noise silenced at its source.

Measured on the tiny config (a 3-step fit, CPU): 17 lines on stderr and a model-summary table on stdout, of which
the user could act on none, and two read like errors. Each silenced line is listed here with why it is noise; a
library's real warnings still show (only these messages and these loggers' INFO lines are dropped):

- Lightning's INFO lines ("Seed set to", "GPU available", "TPU available", the litlogger tip, "Loading
  `train_dataloader` to estimate...", "`Trainer.fit` stopped: ...", "`weights_only` was not set"): nextai logs
  what happened itself (the effective batch, the stop reason in the end-of-run summary, the checkpoint loaded).
- transformers' "Loading weights" and datasets' "Map" / "Saving the dataset" progress bars (tqdm bars beside the
  rich one, for steps that take a second; nextai logs what it tokenized and where it cached it).
- transformers 5.2x renamed gradient checkpointing to activation checkpointing and warns at every call that peft
  still makes (`gradient_checkpointing_enable is deprecated`).
- bitsandbytes on a CPU: "Failed to load CPU gemm_4bit_forward from kernels-community" (an optional kernel from
  the hub; bitsandbytes falls back to its own, and nextai never downloads at run time) and "Paged optimizers are
  not supported on CPU" (it falls back to the unpaged optimizer, which is what a CPU run wants).
- Lightning's own use of a deprecated torch pytree name (`isinstance(treespec, LeafSpec)`).
"""

import logging
import os
import sys
import warnings

# Loggers whose INFO lines are noise for a nextai user (warnings and errors still show).
QUIET_LOGGERS: dict[str, int] = {
    "lightning.pytorch": logging.WARNING,
    "lightning.fabric": logging.WARNING,
    "bitsandbytes.backends.cpu.ops": logging.ERROR,  # the optional hub kernel it cannot load (see above)
}
# (category, message regex) of warnings that say nothing the user can act on.
QUIET_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r".*is deprecated and will be removed in v6"),
    (UserWarning, r"Paged optimizers are not supported on CPU"),
    (Warning, r".*isinstance\(treespec, LeafSpec\)"),
)


def quiet_libraries() -> None:
    """Silence the noise listed in the module docstring: before the libraries are imported (warnings filters and
    environment variables), and again once Lightning is (importing it sets its loggers to INFO)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar reads it too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Map", "Saving the dataset": nextai logs its own


def configure_logging() -> None:
    """nextai's log lines on stderr (stdout stays for results: a chat reply, a table), through rich on a terminal
    and as plain lines otherwise; INFO on rank 0, warnings only on the other processes."""
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    logger = logging.getLogger("nextai")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    if logger.handlers:
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False,
                                               markup=False)
    else:
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (a test's capture, a progress bar's redirect),
    not the stream that was current when the handler was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
