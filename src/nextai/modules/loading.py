"""Loading a causal LM by hub id or local path, quantized as asked, for training and for inference."""

import logging
from pathlib import Path

import torch

from nextai.errors import NextaiError, first_line
from nextai.modules.attention import AttentionChoice, choose_attention
from nextai.modules.quantization import Quantization, reconcile_with_checkpoint
from nextai.base_model import resolve_base_model

log = logging.getLogger(__name__)


def load_causal_lm(name_or_path: str, quantization: Quantization, attn_implementation: AttentionChoice,
                   device: torch.device | str, dtype: torch.dtype = torch.bfloat16, packed: bool = False):
    """`AutoModelForCausalLM.from_pretrained` with a `BitsAndBytesConfig` from `quantization`, placed whole on
    `device`; logs which attention kernel was chosen and why (`packed`: for padding-free packed batches)."""
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    implementation, reason = choose_attention(attn_implementation, device.type, packed)
    path = resolve_base_model(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quantization.to_bnb_config(), dtype=dtype,
            attn_implementation=implementation, device_map={"": device})
    except (OSError, ValueError) as err:
        raise NextaiError(f"cannot load model '{name_or_path}': {first_line(err)}") from None
    reconcile_with_checkpoint(model, quantization)
    ran = getattr(model.config, "_attn_implementation", implementation)
    log.info("attention: %s (%s)", ran, reason)
    model.config.use_cache = False
    return model


def load_for_inference(base_model: str, adapter: str | Path | None, quantization: Quantization,
                       attn_implementation: AttentionChoice = "auto", device: torch.device | str = "cpu"):
    """The quantized base with a PEFT adapter directory on top (or the base alone), in eval mode."""
    model = load_causal_lm(base_model, quantization, attn_implementation, device)
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise NextaiError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter))
    model.config.use_cache = True
    return model.eval()
