"""Test helper: the tiny 4-bit model with LoRA whose weights come from a fixed seed. peft starts B at zero, which
hides LoRA's gradients and its part of the output; fixed weights also make separately built modules compute the
same function."""

import torch

from nextai.modules.qlora import QLoRAModule


def set_lora_weights(model, seed: int = 0, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * scale)


def build_tiny_lora(model_dir, device: str, **options) -> QLoRAModule:
    """LoRA r=8 on every projection unless `options` say otherwise; in train mode."""
    module = QLoRAModule(base_model=str(model_dir), **{"lora_targets": "all", "lora_r": 8, "cutoff_len": 256,
                                                        **options})
    module.build_model(device)
    set_lora_weights(module.model)
    return module.train()
