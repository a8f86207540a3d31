"""The bitsandbytes settings of the report's Table 2, as typed arguments, and their `BitsAndBytesConfig`."""

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from nextai.errors import NextaiError

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
