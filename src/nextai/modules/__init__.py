"""The model side: quantized loading, LoRA presets, attention choice, optimizers and the LightningModule."""

from nextai.modules.qlora import QLoRAModule
from nextai.modules.quantization import Quantization

__all__ = ["QLoRAModule", "Quantization"]
