"""The model side: quantized loading, LoRA presets, attention choice, optimizers and the LightningModule.

`QLoRAModule` and `Quantization` are imported on first use, so a light submodule (`nextai.modules.settings` for
`nextai plan`) does not pull in Lightning, transformers and peft with it."""

from nextai.lazy import lazy_exports

_EXPORTS = {"QLoRAModule": "nextai.modules.qlora", "Quantization": "nextai.modules.quantization"}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
