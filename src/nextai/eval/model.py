"""The model that evaluate, serve and chat run: the quantized base with the run's LoRA weights, from a checkpoint or
a PEFT adapter directory, on the trainer's device, with the prompt format those weights were trained with."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nextai.errors import NextaiError
from nextai.rundir import ADAPTER_DIR

if TYPE_CHECKING:
    from nextai.eval.prompting import InferencePrompt

log = logging.getLogger(__name__)

BASE_ONLY = "base"  # `--adapter base`: the base model alone


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    description: dict  # what was loaded, written into results
    prompt: "InferencePrompt"  # how to ask it (nextai.eval.prompting)


def choose_weights(adapter: str | None, ckpt_path: str | None, run_directory: Path) -> tuple[str | None, str | None]:
    """(adapter directory, checkpoint) to load, at most one of them; without either, the run's own adapter."""
    if adapter is not None and ckpt_path is not None:
        raise NextaiError("give either --ckpt_path or --adapter, not both")
    if adapter is None and ckpt_path is None:
        own = run_directory / ADAPTER_DIR
        if not (own / "adapter_config.json").is_file():
            raise NextaiError(f"no adapter in the run directory {run_directory}: give --ckpt_path CHECKPOINT, "
                              f"--adapter DIRECTORY, or --adapter {BASE_ONLY} for the base model alone")
        log.info("weights: the run's adapter %s", own)
        return str(own), None
    if adapter == BASE_ONLY:
        return None, None
    return adapter, ckpt_path


def load_model(module, device: torch.device | str, adapter: str | None, ckpt_path: str | None,
               run_directory: str | Path = ".") -> LoadedModel:
    """Build `module`'s base model on `device` with LoRA weights from `adapter` or `ckpt_path` (as returned by
    `choose_weights`; neither: the base alone), in eval mode, and find the prompt format they were trained with
    (`find_prompt_format`; `run_directory` is the configured run, for a checkpoint copied out of its own).

    Both load the quantized base for inference (padded batches, with a cache; whatever `data.packing` the run
    trained with) and add the LoRA weights on top: a checkpoint's through `attach_checkpoint`, an adapter
    directory's through peft's `PeftModel.from_pretrained`.
    """
    from nextai.base_model import resolve_base_model
    from nextai.data.tokenize import load_tokenizer
    from nextai.eval.prompting import find_prompt_format
    from nextai.modules.loading import load_for_inference

    settings = module.settings
    description = {"base_model": settings.base_model, "adapter": adapter, "checkpoint": ckpt_path,
                   "quantization": "4-bit" if module.quantization.enabled else "none", "device": str(device)}
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            raise NextaiError(f"checkpoint not found: {ckpt_path}")
        base = load_for_inference(settings.base_model, None, module.quantization, settings.kernels.attn_implementation,
                                  device)
        model = attach_checkpoint(module, base, ckpt_path)
    else:
        if adapter is not None:
            check_adapter_base(Path(adapter), settings.base_model)
        model = load_for_inference(settings.base_model, adapter, module.quantization, settings.kernels.attn_implementation,
                                   device)
    model.eval()
    log.info("loaded %s%s on %s", settings.base_model,
             f" + {adapter or ckpt_path}" if (adapter or ckpt_path) else " (no adapter)", device)
    base_directory = resolve_base_model(settings.base_model)
    tokenizer = load_tokenizer(base_directory)
    prompt = find_prompt_format(tokenizer, adapter, ckpt_path, Path(run_directory), base_directory)
    return LoadedModel(model, tokenizer, description, prompt)


def attach_checkpoint(module, base, ckpt_path: str):
    """The base with LoRA layers built from the module's settings and filled from a nextai checkpoint."""
    from peft import get_peft_model

    from nextai.modules.adapter_state import check_lora_weights, checkpoint_lora_state
    from nextai.modules.lora import lora_config

    lora = module.settings.lora
    weights = checkpoint_lora_state(ckpt_path)
    model = get_peft_model(base, lora_config(lora.r, lora.alpha, lora.dropout, lora.targets))
    expected = {name: parameter.shape for name, parameter in model.named_parameters() if "lora_" in name}
    check_lora_weights(expected, weights, f"checkpoint {ckpt_path}", lora)
    model.load_state_dict(weights, strict=False)
    return model


def check_adapter_base(adapter: Path, base_model: str) -> None:
    """Warn when an adapter was trained on another base than the one configured (its weights would not fit)."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise NextaiError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    from nextai.base_model import resolve_base_model

    trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
    if trained_on and trained_on not in (base_model, resolve_base_model(base_model)):
        log.warning("adapter %s was trained on %s; the configured base is %s", adapter, trained_on, base_model)
