"""nextai checkpoint -> PEFT LoRA adapter, without building or merging a model.

A nextai checkpoint (`checkpoints/*.ckpt`) keeps the trainable LoRA weights under the names of `QLoRAModule`'s
parameters (`model.base_model.model....lora_A.default.weight`) next to optimizer and loop state; a PEFT adapter
directory keeps the same tensors under the names `PeftModel.save_pretrained` writes (`base_model.model....lora_A
.weight`: the module prefix and the adapter name dropped) beside an `adapter_config.json`. These functions turn one
into the other, so any intermediate checkpoint becomes an adapter that `PeftModel.from_pretrained` loads:

    state = checkpoint_lora_state("runs/x/checkpoints/epoch=0-step=25.ckpt")
    write_adapter("runs/x/adapter-step25", peft_state(state), lora_config(r, alpha, dropout, targets), "base/id")
"""

from pathlib import Path

import torch

from nextai.atomic import atomic_path
from nextai.errors import NextaiError

MODULE_PREFIX = "model."  # QLoRAModule keeps the PeftModel as `self.model`
ADAPTER_NAME = "default"  # peft's name for the one adapter nextai trains
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def checkpoint_lora_state(ckpt_path: str | Path) -> dict[str, torch.Tensor]:
    """The LoRA weights of a nextai checkpoint, named as the PeftModel's own parameters (adapter name kept)."""
    try:
        saved = torch.load(str(ckpt_path), map_location="cpu", weights_only=False, mmap=True)
    except FileNotFoundError:
        raise NextaiError(f"checkpoint not found: {ckpt_path}") from None
    except Exception as err:  # pickle, zip or torch errors: not a checkpoint
        raise NextaiError(f"{ckpt_path}: not a nextai checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise NextaiError(f"{ckpt_path}: not a nextai checkpoint (no state_dict)")
    state = {name.removeprefix(MODULE_PREFIX): tensor for name, tensor in saved["state_dict"].items()
             if "lora_" in name}
    if not state:
        raise NextaiError(f"{ckpt_path}: holds no LoRA weights")
    return state


def check_lora_weights(expected: dict[str, torch.Size], saved: dict[str, torch.Tensor], source: str,
                       lora) -> None:
    """`saved` holds a weight of the right shape for each of `expected` ({name: shape}, named alike), else one
    line naming the weight and the setting that differs (`lora`: the run's `LoRASettings`). Training (resume) and
    inference (`--ckpt_path`) both check a checkpoint through here."""
    for name, shape in expected.items():
        if name not in saved:
            raise NextaiError(f"{source} has no weights for {name}: it was saved with other LoRA targets than "
                              f"{lora.targets!r}")
        if tuple(saved[name].shape) != tuple(shape):
            raise NextaiError(f"{source} weight {name} has shape {tuple(saved[name].shape)}, the model expects "
                              f"{tuple(shape)} (another lora_r than {lora.r}?)")


def peft_state(state: dict[str, torch.Tensor], adapter_name: str = ADAPTER_NAME) -> dict[str, torch.Tensor]:
    """PeftModel parameter names -> the names in `adapter_model.safetensors` (what peft's
    `get_peft_model_state_dict` does for LoRA: the adapter name dropped)."""
    marker = f".{adapter_name}."
    return {name.replace(marker, "."): tensor.detach().contiguous() for name, tensor in state.items()}


def write_adapter(directory: str | Path, state: dict[str, torch.Tensor], config, base_model_name_or_path: str,
                  files: dict[str, str | Path] | None = None) -> Path:
    """Write a PEFT adapter directory atomically: `adapter_config.json` (`config`, a peft `LoraConfig`, with the
    base named), `adapter_model.safetensors` (`state`, as `peft_state` names it) and `files` ({name: source path})
    copied beside them."""
    import shutil

    from safetensors.torch import save_file

    config.base_model_name_or_path = base_model_name_or_path
    directory = Path(directory)
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        config.save_pretrained(str(tmp))
        save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        for name, source in (files or {}).items():
            shutil.copy2(source, tmp / name)
    return directory
