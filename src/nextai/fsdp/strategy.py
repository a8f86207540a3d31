"""The FSDP settings a 4-bit QLoRA model needs: what is wrapped, what is recomputed, which dtype the 4-bit weights
are stored in, and Lightning's `FSDPStrategy` with adapter-sized checkpoints (`QLoRAFSDPStrategy`).

Nothing here launches processes or moves tensors between them: Lightning's FSDP strategy and launchers do. Which
model settings FSDP refuses or changes is the compatibility table (`nextai.modules.compatibility`).
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

    from nextai.fsdp.checkpoint import QLoRAFSDPStrategy

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
