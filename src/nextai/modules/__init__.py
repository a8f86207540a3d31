"""The model side: quantized loading, LoRA presets, attention choice, optimizers and the LightningModule.

`QLoRAModule` and `Quantization` are imported on first use, so a light submodule (`nextai.modules.settings` for
`nextai plan`) does not pull in Lightning, transformers and peft with it."""

import importlib

_LAZY = {"QLoRAModule": "nextai.modules.qlora", "Quantization": "nextai.modules.quantization"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
