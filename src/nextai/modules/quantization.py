"""The bitsandbytes settings of the report's Table 2, as typed arguments, and their `BitsAndBytesConfig`."""

import logging
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from nextai.errors import NextaiError

log = logging.getLogger(__name__)

DTypeName = Literal["bfloat16", "float16", "float32"]
StorageName = Literal["uint8", "bfloat16", "float16", "float32"]


@dataclass
class Quantization:
    """How the frozen base weights are stored. The defaults are the report's Table 2 (4-bit NF4, double
    quantization, bf16 compute); the int8 fields are passed through as they are. `bnb_4bit_quant_storage`
    must match the sharding dtype under FSDP. With both `load_in_4bit` and `load_in_8bit` false the base
    is loaded unquantized in bf16 (plain LoRA)."""

    load_in_4bit: bool = True
    load_in_8bit: bool = False
    llm_int8_threshold: float = 6.0
    llm_int8_skip_modules: list[str] | None = None
    llm_int8_enable_fp32_cpu_offload: bool = False
    llm_int8_has_fp16_weight: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: DTypeName = "bfloat16"
    bnb_4bit_quant_storage: StorageName = "uint8"

    @property
    def enabled(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    def to_bnb_config(self):
        """The `transformers.BitsAndBytesConfig`, or None when the base is not quantized."""
        from transformers import BitsAndBytesConfig

        if self.load_in_4bit and self.load_in_8bit:
            raise NextaiError("model.quantization: load_in_4bit and load_in_8bit are both true; choose one")
        if not self.enabled:
            return None
        fields = asdict(self)
        fields["bnb_4bit_compute_dtype"] = getattr(torch, self.bnb_4bit_compute_dtype)
        fields["bnb_4bit_quant_storage"] = getattr(torch, self.bnb_4bit_quant_storage)
        return BitsAndBytesConfig(**fields)


def keep_cpu_layout_trainable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel in a model being trained.

    bitsandbytes 0.50 converts a `Linear4bit` weight to an AVX512-BF16 layout the first time the layer runs in eval
    mode without grad (a validation pass), and from then on uses a kernel that has no backward: every later
    training step silently loses the gradient flowing through that frozen layer. A model that trains keeps the
    standard layout (validation then takes the regular dequantize path). No effect on GPUs.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def differences_from_checkpoint(quantization: "Quantization", used: dict) -> list[str]:
    """The settings (storage aside) in which `quantization` differs from the quantization config a model was
    loaded with (`used`, the config's dict: for a checkpoint saved quantized, transformers keeps its own)."""
    asked = {k: str(v).removeprefix("torch.") for k, v in asdict(quantization).items()}
    return [f"{key} {asked[key]} (the checkpoint's: {used[key]})" for key in (
        "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype")
        if key in used and asked[key] != str(used[key]).removeprefix("torch.")]


def restore_quant_storage(model, storage: torch.dtype) -> int:
    """Give every 4-bit weight the storage dtype asked for; returns how many were changed.

    transformers loads an already-quantized checkpoint in the storage dtype it was saved with (uint8, as most are)
    whatever `bnb_4bit_quant_storage` says, and FSDP then meets uint8 weights beside bf16 norms in one decoder
    layer, which it cannot flatten. The packed bytes and the quantization state stay as they are: only the dtype
    they are read as changes (bitsandbytes dequantizes any storage dtype the same way).
    """
    import bitsandbytes as bnb

    changed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, bnb.nn.Params4bit) or weight.dtype == storage:
            continue
        packed = weight.data.reshape(-1)
        if packed.numel() * packed.element_size() % storage.itemsize:
            raise NextaiError(f"a 4-bit weight of {packed.numel() * packed.element_size()} bytes cannot be stored as "
                              f"{storage} (model.quantization.bnb_4bit_quant_storage)")
        module.weight = bnb.nn.Params4bit(
            packed.view(storage).reshape(-1, 1), requires_grad=False, quant_state=weight.quant_state,
            blocksize=weight.blocksize, compress_statistics=weight.compress_statistics, quant_type=weight.quant_type,
            quant_storage=storage, module=module, bnb_quantized=True)
        module.quant_storage = storage
        changed += 1
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if changed and config is not None and hasattr(config, "bnb_4bit_quant_storage"):
        config.bnb_4bit_quant_storage = storage  # what the weights now are
    return changed


def reconcile_with_checkpoint(model, quantization: Quantization) -> None:
    """After loading: name the settings a checkpoint saved already quantized kept against `quantization` (a
    warning), and give its 4-bit weights the storage dtype asked for (logged)."""
    used = getattr(model.config, "quantization_config", None)
    if quantization.enabled and used is not None:
        used = used if isinstance(used, dict) else used.to_dict()
        if differences := differences_from_checkpoint(quantization, used):
            log.warning("the checkpoint was saved quantized and loads as it was: model.quantization %s",
                        "; ".join(differences))
    if quantization.load_in_4bit:
        if changed := restore_quant_storage(model, getattr(torch, quantization.bnb_4bit_quant_storage)):
            log.info("4-bit weights: %d saved in another storage dtype by the checkpoint, read as %s "
                     "(model.quantization.bnb_4bit_quant_storage)", changed, quantization.bnb_4bit_quant_storage)
