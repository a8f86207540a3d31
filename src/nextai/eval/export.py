"""`nextai export`: the LoRA weights merged into a bf16 copy of the base (peft's `merge_and_unload`), written as a
plain transformers checkpoint (safetensors + config + tokenizer) for serving stacks without peft.

`base_weights` picks what the adapter is merged into: `original` (the base's own bf16 weights; what deployments
usually want) or `dequantized` (the NF4 weights the adapter was trained against, dequantized to bf16; the merged
model then computes what the 4-bit model + adapter computed, up to bf16 rounding).
"""

import logging
from pathlib import Path
from typing import Literal

import torch

from nextai.atomic import atomic_path
from nextai.errors import NextaiError, first_line

log = logging.getLogger(__name__)

BaseWeights = Literal["original", "dequantized"]
MERGED_DIR = "merged"  # default output inside the run directory


def load_bf16_base(module, base_weights: BaseWeights, device: torch.device | str):
    from transformers import AutoModelForCausalLM

    from nextai.modules.loading import load_causal_lm
    from nextai.base_model import resolve_base_model

    hp = module.hparams
    if base_weights == "dequantized":
        if not module.quantization.enabled:
            raise NextaiError("base_weights=dequantized needs a quantized base (model.quantization)")
        model = load_causal_lm(hp.base_model, module.quantization, "sdpa", device)
        return model.dequantize().to(torch.bfloat16)
    if base_weights != "original":
        raise NextaiError(f"base_weights must be 'original' or 'dequantized', got {base_weights!r}")
    try:
        return AutoModelForCausalLM.from_pretrained(resolve_base_model(hp.base_model), dtype=torch.bfloat16,
                                                    device_map={"": torch.device(device)})
    except (OSError, ValueError) as err:
        raise NextaiError(f"cannot load model '{hp.base_model}': {first_line(err)}") from None


def export_merged(module, adapter: str | None, ckpt_path: str | None, output: str | Path, run_directory: Path,
                  base_weights: BaseWeights = "original", device: torch.device | str = "cpu") -> Path:
    """Merge the run's LoRA weights (an adapter directory, a checkpoint, or the run's adapter) into the bf16 base
    and write it to `output` atomically."""
    from peft import PeftModel

    from nextai.data.tokenize import load_tokenizer
    from nextai.eval.model import attach_checkpoint, check_adapter_base, choose_weights
    from nextai.base_model import resolve_base_model

    adapter, ckpt_path = choose_weights(adapter, ckpt_path, run_directory)
    if adapter is None and ckpt_path is None:
        raise NextaiError("nothing to merge: export needs --adapter DIRECTORY or --ckpt_path CHECKPOINT")
    output = Path(output)
    base = load_bf16_base(module, base_weights, device)
    if ckpt_path is not None:
        model = attach_checkpoint(module, base, ckpt_path)
    else:
        check_adapter_base(Path(adapter), module.hparams.base_model)
        model = PeftModel.from_pretrained(base, adapter)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    tokenizer = load_tokenizer(resolve_base_model(module.hparams.base_model))
    with atomic_path(output) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("merged %s into %s base weights of %s: %s", adapter or ckpt_path, base_weights,
             module.hparams.base_model, output)
    return output
