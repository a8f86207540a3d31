"""The LightningCLI that wires the model, the data and the callbacks; the only module that imports all. The
entry point, `nextai.main`, imports it only for the commands that read a training config:

    nextai fit --config configs/tiny.yaml [--model.lora_r 8] [--budget.limit 90m] [--print_config]
    nextai validate --config configs/tiny.yaml [--ckpt_path runs/tiny/checkpoints/last.ckpt]

Subcommands that read the same config as `fit` are methods of `NextaiTrainer` (listed in `CONFIG_COMMANDS`).
"""

import glob
import logging
import os
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from nextai.base_model import resolve_base_model
from nextai.callbacks import PeakMemoryMonitor, WallClockBudget, always_on_callbacks
from nextai.checkpoint_io import AtomicCheckpointIO
from nextai.config_files import expand_config_args
from nextai.data.batching import accumulation_steps, micro_batch_tokens
from nextai.data.datamodule import InstructionDataModule
from nextai.errors import NextaiError
from nextai.loggers import run_loggers
from nextai.modules.qlora import QLoRAModule
from nextai.quiet import quiet_libraries
from nextai.rundir import CHECKPOINT_DIR, check_run_dir
from nextai.fsdp.strategy import decoder_layer_names, fsdp_quant_storage, qlora_fsdp_strategy
from nextai.modules.compatibility import FSDP_STRATEGIES, resolve, strategy_kind
from nextai.trainer import NextaiTrainer

log = logging.getLogger("nextai.cli")

# Subcommands (beyond fit and validate) that read the model/data/trainer config; each is a NextaiTrainer method.
CONFIG_COMMANDS: dict[str, set[str]] = {
    "prepare": {"model", "datamodule"},
    "evaluate": {"model", "datamodule"},
    "serve": {"model", "datamodule"},
    "chat": {"model", "datamodule"},
    "export": {"model", "datamodule"},
    "push": {"model", "datamodule"},
    "plan": {"model", "datamodule"},
}


class NextaiCLI(LightningCLI):
    """LightningCLI with nextai's links, always-on callbacks and a CSV logger writing into the run directory."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            QLoRAModule,
            InstructionDataModule,
            trainer_class=NextaiTrainer,
            trainer_defaults={
                "callbacks": always_on_callbacks(),
                # Lightning's parameter table counts 4-bit packed weights as halves (1.6 M for the tiny model's
                # 2.2 M): nextai logs its own line (trainable of total, LoRA rank and targets) instead.
                "enable_model_summary": False,
                # nextai's samplers give each process its own share of every epoch (resumable, packing-aware).
                "use_distributed_sampler": False,
            },
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            # Parse errors raise instead of printing usage, so main() reports them in one line like any other.
            parser_kwargs={"exit_on_error": False, **{name: {"exit_on_error": False} for name in self.subcommands()}},
            auto_configure_optimizers=False,
            args=expand_config_args(args) if args is not None else None,  # run_lightning_cli expands sys.argv itself
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            **CONFIG_COMMANDS,
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        keep_strings_literal(parser)
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: replace what an earlier run left in trainer.default_root_dir")
        parser.add_lightning_class_args(WallClockBudget, "budget")
        parser.add_lightning_class_args(PeakMemoryMonitor, "peak_memory")
        # One value, two users: the tokenizer is the base model's, the model checks the data's cutoff length.
        parser.link_arguments("model.base_model", "data.tokenizer", compute_fn=resolve_base_model)
        parser.link_arguments("data.cutoff_len", "model.cutoff_len")
        parser.link_arguments("data.packing", "model.packing")
        parser.link_arguments(("data.packing", "data.pack_length", "data.micro_batch_size", "data.cutoff_len"),
                              "model.micro_batch_tokens", compute_fn=micro_batch_tokens)
        parser.link_arguments(("data.batch_size", "data.micro_batch_size"), "trainer.accumulate_grad_batches",
                              compute_fn=accumulation_steps)

    def before_instantiate_classes(self) -> None:
        """Under FSDP the 4-bit weights are stored in the dtype FSDP shards in (set here, so config.yaml and the
        checkpoint's hyperparameters show what ran)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if strategy_kind(config.trainer.get("strategy")) != "fsdp" or config.get("model") is None:
            return
        quantization = config.model.get("quantization")
        if quantization is None:
            return
        storage = fsdp_quant_storage(quantization, config.trainer.get("precision"))
        if storage is not None:
            log.info("fsdp: model.quantization.bnb_4bit_quant_storage %s -> %s (the dtype FSDP shards in)",
                     quantization.bnb_4bit_quant_storage, storage)
            quantization.bnb_4bit_quant_storage = storage

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._get(self.config_init, "trainer", default={})
        strategy = trainer_config.get("strategy")
        if strategy in FSDP_STRATEGIES and self.model is not None:
            # Lightning's FSDPStrategy, configured for a 4-bit base with LoRA (see nextai.fsdp).
            settings = resolve(self.model.settings, "fsdp")  # the table's FSDP refusals, before any process starts
            layers = decoder_layer_names(settings.base_model)
            recompute = settings.memory.gradient_checkpointing
            offload = {"cpu_offload": True} if strategy == "fsdp_cpu_offload" else {}
            kwargs["strategy"] = qlora_fsdp_strategy(layers, activation_checkpointing=recompute, **offload)
            log.info("fsdp: %s wrapped and%s recomputed per layer, LoRA weights in units of their own, "
                     "use_orig_params, full state dicts on rank 0%s", ", ".join(sorted(layers)),
                     "" if recompute else " not", ", parameters offloaded to the CPU" if offload else "")
        root = trainer_config.get("default_root_dir") or os.getcwd()
        if self.subcommand not in (None, "fit"):
            # Other commands in a run directory leave the training run's config.yaml, hparams.yaml and metrics.csv
            # as they are: their own metrics go under a subdirectory named for the command.
            self.save_config_callback = None
            root = os.path.join(root, self.subcommand)
        kwargs["logger"] = run_loggers(root, trainer_config.get("logger"))
        if trainer_config.get("enable_progress_bar") is False and trainer_config.get("callbacks"):
            # `--trainer.enable_progress_bar false` beside a config that lists a bar: off, not Lightning's error
            from lightning.pytorch.callbacks import ProgressBar

            trainer_config["callbacks"] = [c for c in trainer_config["callbacks"] if not isinstance(c, ProgressBar)]
        plugins = trainer_config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(hasattr(p, "save_checkpoint") for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except ValueError as err:
            if strategy_kind(kwargs.get("strategy", strategy)) != "fsdp":
                raise
            raise NextaiError(f"trainer.strategy fsdp: {err}") from None  # a bad FSDP setting: one line, not a trace
        if strategy_kind(trainer.strategy) == "fsdp" and trainer.strategy.root_device.type != "cuda":
            # Lightning checks this for its own FSDPStrategy only, not for nextai's subclass.
            raise NextaiError(f"trainer.strategy fsdp needs CUDA GPUs (torch's FSDP does not run on the "
                              f"{trainer.strategy.root_device.type}); set trainer.accelerator gpu")
        if self.datamodule is not None:
            set_effective_batch(trainer, self.datamodule.batch_size, self.datamodule.micro_batch_size,
                                announce=self.subcommand == "fit")
        return trainer

    def before_fit(self) -> None:
        config = self.config[self.subcommand]
        self._resolve_last_checkpoint()
        check_ckpt_path(config.get("ckpt_path"))
        self.model.check_device(self.trainer.strategy.root_device, strategy_kind(self.trainer.strategy))
        check_run_dir(self.trainer.default_root_dir, resuming=config.get("ckpt_path") is not None,
                      overwrite=config.get("overwrite", False))

    def _resolve_last_checkpoint(self) -> None:
        """`--ckpt_path last` means the newest complete checkpoint of this run directory; with none there it is an
        error (Lightning would warn and start from scratch, replacing the run)."""
        if self.config[self.subcommand].get("ckpt_path") != "last":
            return
        path = newest_last_checkpoint(self.trainer.default_root_dir)
        self.config[self.subcommand]["ckpt_path"] = self.config_init[self.subcommand]["ckpt_path"] = path

    def before_validate(self) -> None:
        """Without --ckpt_path, validate scores the run's newest checkpoint (not the untrained adapter Lightning
        would build), and says which weights it scored."""
        config = self.config[self.subcommand]
        if config.get("ckpt_path") is None:
            newest = newest_checkpoint(self.trainer.default_root_dir)
            config["ckpt_path"] = self.config_init[self.subcommand]["ckpt_path"] = newest
            if newest is None:
                log.warning("validate: no checkpoint in %s: scoring the base model (LoRA weights untrained)",
                            os.path.join(self.trainer.default_root_dir, CHECKPOINT_DIR))
        self._resolve_last_checkpoint()
        check_ckpt_path(config.get("ckpt_path"))
        if config.get("ckpt_path") is not None:
            log.info("validate: scoring %s", config["ckpt_path"])
        self.model.check_device(self.trainer.strategy.root_device, strategy_kind(self.trainer.strategy))


def keep_strings_literal(parser) -> None:
    """A value of an option that takes a string (`data.source`, `model.base_model`, ...) is that string, never the
    contents of the file it names. jsonargparse reads a path given to an option whose type also admits a class as a
    config file for that class (`--data.source data/alpaca.csv` became the CSV's text): where a plain string is a
    valid value, nextai turns that off. A class is still given inline or in the YAML config."""
    from jsonargparse import ActionConfigFile

    for action in parser._actions:
        if hasattr(action, "_enable_path") and not isinstance(action, ActionConfigFile) and admits_str(action):
            action._enable_path = False


def admits_str(action) -> bool:
    import typing

    hint = getattr(action, "_typehint", None)
    return hint is str or str in typing.get_args(hint)


def processes(trainer) -> int:
    """Processes that train together (devices per node x nodes), known before Lightning launches them."""
    return max(int(trainer.num_devices), 1) * max(int(trainer.num_nodes), 1)


def set_effective_batch(trainer, batch_size: int, micro_batch_size: int, announce: bool = True) -> None:
    """One optimizer step sees `data.batch_size` examples whatever the number of processes: each accumulates
    batch_size / (micro_batch_size x processes) micro batches. Logged once, by `fit`."""
    world = processes(trainer)
    trainer.accumulate_grad_batches = accumulation_steps(batch_size, micro_batch_size, world)
    if announce:
        log.info("effective batch: data.batch_size %d = micro batch %d x %d accumulated x %d process%s",
                 batch_size, micro_batch_size, trainer.accumulate_grad_batches, world, "" if world == 1 else "es")


def newest_last_checkpoint(root: str) -> str:
    directory = os.path.join(root, CHECKPOINT_DIR)
    candidates = glob.glob(os.path.join(directory, "last*.ckpt"))
    if not candidates:
        raise NextaiError(f"checkpoint 'last': none to resume in {directory}; check "
                          "--trainer.default_root_dir, or leave --ckpt_path out to start a new run")
    return max(candidates, key=os.path.getmtime)


def newest_checkpoint(root: str) -> str | None:
    """The run's most recently written checkpoint (`last` or a step's), or None."""
    candidates = glob.glob(os.path.join(root, CHECKPOINT_DIR, "*.ckpt"))
    return max(candidates, key=os.path.getmtime) if candidates else None


def check_ckpt_path(ckpt_path: str | None) -> None:
    if ckpt_path not in (None, "last", "best", "hpc") and not os.path.isfile(ckpt_path):
        raise NextaiError(f"checkpoint not found: {ckpt_path} (use a .ckpt file, or last for the newest one)")


def run_lightning_cli(argv: Sequence[str]) -> None:
    """A command that reads a training config (fit, validate, evaluate, ...), as `nextai.main` dispatches it."""
    quiet_libraries()  # again: importing Lightning set its loggers back to INFO
    # LightningCLI reads sys.argv; one source avoids its "both given" warning. Configs may extend others.
    sys.argv = [sys.argv[0], *expand_config_args(list(argv))]
    NextaiCLI()
