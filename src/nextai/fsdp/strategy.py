"""More than one GPU with Lightning's own strategies: the effective batch under data parallelism, and the FSDP
settings a 4-bit QLoRA model needs (what is wrapped, what is recomputed, which dtype the 4-bit weights are stored in).

Nothing here launches processes or moves tensors between them: Lightning's DDP/FSDP strategies and launchers do.
"""

import logging

import torch

from nextai.errors import NextaiError, first_line

log = logging.getLogger(__name__)

# FSDP computes in the precision plugin's parameter dtype (Lightning: bf16 for bf16-mixed and bf16-true); the 4-bit
# weights are stored as tensors of this dtype so that every FSDP unit flattens parameters of one dtype.
FSDP_PARAM_DTYPE = {"bf16-mixed": "bfloat16", "bf16-true": "bfloat16", "bf16": "bfloat16",
                    "16-mixed": "float16", "16-true": "float16", "16": "float16",
                    "32-true": "float32", "32": "float32"}
# Single-GPU levers that manage activations or wrap the decoder layers themselves; under FSDP the strategy
# wraps and checkpoints the decoder layers.
NOT_WITH_FSDP = ("offload_activations", "memory_budget", "compile_layers")
# What FSDP and activation checkpointing put in front of a parameter's name; state dicts are keyed without them.
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def clean_name(name: str) -> str:
    """A parameter or module name as the unwrapped model has it (torch's own state dicts strip the same)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def processes(trainer) -> int:
    """Processes that train together (devices per node x nodes), known before Lightning launches them."""
    return max(int(trainer.num_devices), 1) * max(int(trainer.num_nodes), 1)


def is_fsdp(strategy) -> bool:
    """The strategy (a name as given to the Trainer, or a strategy object) shards the model with FSDP."""
    if isinstance(strategy, str):
        return strategy.split("_")[0] == "fsdp"
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)


def decoder_layer_names(base_model: str) -> set[str]:
    """Class names of the model's decoder layers (transformers' `_no_split_modules`: `LlamaDecoderLayer`), read from
    its config, so the strategy can be configured before the model is loaded."""
    import transformers
    from transformers import AutoConfig

    from nextai.base_model import resolve_base_model

    try:
        config = AutoConfig.from_pretrained(resolve_base_model(base_model))
    except (OSError, ValueError) as err:
        raise NextaiError(f"cannot read the config of model '{base_model}': {first_line(err)}") \
            from None
    names: set[str] = set()
    for architecture in config.architectures or []:
        names.update(getattr(getattr(transformers, architecture, None), "_no_split_modules", None) or [])
    if not names:
        raise NextaiError(f"model '{base_model}': no decoder layer class found (config.architectures "
                          f"{config.architectures}), so FSDP has nothing to wrap per layer")
    return names


def wraps_as_unit(module: torch.nn.Module, layer_names: set[str]) -> bool:
    """FSDP's wrapping rule for QLoRA (peft's `fsdp_auto_wrap_policy`, decided per module as FSDP meets it):
    every decoder layer is one unit (its frozen 4-bit and bf16 weights, sharded), and every leaf whose weights all
    train (a LoRA A or B) is a unit of its own, so fp32 LoRA weights never share a flat parameter with bf16 ones."""
    if type(module).__name__ in layer_names:
        return True
    parameters = list(module.parameters(recurse=False))
    return (not list(module.children()) and bool(parameters) and all(p.requires_grad for p in parameters))


def is_decoder_layer(module: torch.nn.Module, layer_names: set[str]) -> bool:
    return type(module).__name__ in layer_names


def qlora_fsdp_strategy(layer_names: set[str], activation_checkpointing: bool, **overrides):
    """Lightning's `FSDPStrategy` for a 4-bit base with LoRA: decoder layers and LoRA leaves wrapped as units,
    `use_orig_params=True` (a unit mixes frozen and trainable parameters, and the optimizer is built from the
    trainable ones by name), decoder layers recomputed in the backward pass by the strategy's activation
    checkpointing, full state dicts gathered on rank 0 (checkpoints stay adapter-sized and load onto any number of
    devices; only the LoRA weights are gathered: `nextai.fsdp_checkpoint`). `overrides` go to `FSDPStrategy` as
    they are."""
    from functools import partial

    from torch.distributed.fsdp.wrap import CustomPolicy

    from nextai.fsdp_checkpoint import QLoRAFSDPStrategy

    layers = frozenset(layer_names)
    settings = {
        "auto_wrap_policy": CustomPolicy(partial(wraps_as_unit, layer_names=layers)),
        "activation_checkpointing_policy": (CustomPolicy(partial(is_decoder_layer, layer_names=layers))
                                            if activation_checkpointing else None),
        "use_orig_params": True,
        "sharding_strategy": "FULL_SHARD",
        "state_dict_type": "full",
        "limit_all_gathers": True,
        **overrides,
    }
    return QLoRAFSDPStrategy(**settings)


def fsdp_quant_storage(quantization, precision: str | None) -> str | None:
    """The `bnb_4bit_quant_storage` FSDP needs (the dtype it computes in), or None when nothing must change.

    The single-GPU default `uint8` is replaced (and logged); any other value that differs is an error, since a
    unit would then flatten two dtypes."""
    if not quantization.load_in_4bit:
        return None
    wanted = FSDP_PARAM_DTYPE.get(str(precision or "32-true"))
    if wanted is None:
        raise NextaiError(f"trainer.precision {precision!r}: FSDP with a 4-bit model needs one of "
                          f"{', '.join(FSDP_PARAM_DTYPE)}")
    storage = quantization.bnb_4bit_quant_storage
    if storage == wanted:
        return None
    if storage != "uint8":
        raise NextaiError(f"model.quantization.bnb_4bit_quant_storage {storage} does not match the {wanted} FSDP "
                          f"shards in with trainer.precision {precision}: set it to {wanted}")
    return wanted


def check_fsdp_model(hparams) -> None:
    """Options that manage activations or wrap the decoder layers themselves cannot be combined with FSDP (which
    wraps the layers: compiling them first is untested), nor can bitsandbytes' 8-bit optimizers: their quantized
    states belong to each process's shard and FSDP cannot gather them into a checkpoint (bitsandbytes#89, #2080)."""
    from nextai.modules.optim import STATE_BYTES_PER_PARAM

    used = [name for name in NOT_WITH_FSDP if hparams.get(name)]
    if used:
        raise NextaiError(f"model.{used[0]} is a single-GPU lever; with trainer.strategy fsdp the strategy "
                          "shards the weights and recomputes the decoder layers: leave it unset")
    optimizer = hparams.get("optimizer")
    if STATE_BYTES_PER_PARAM.get(optimizer, 8) < 8:
        raise NextaiError(f"model.optimizer {optimizer} keeps 8-bit states per FSDP shard, which cannot be gathered "
                          "into a checkpoint; with trainer.strategy fsdp use model.optimizer adamw (fp32 states of "
                          "the LoRA weights only: megabytes)")
