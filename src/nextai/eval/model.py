"""The model that evaluate and serve run: the quantized base with the run's LoRA weights, from a checkpoint or a
PEFT adapter directory, on the trainer's device."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from nextai.errors import NextaiError
from nextai.rundir import ADAPTER_DIR

log = logging.getLogger(__name__)

BASE_ONLY = "base"  # `--adapter base`: the base model alone


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    description: dict  # what was loaded, written into results


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


def load_model(module, device: torch.device | str, adapter: str | None, ckpt_path: str | None) -> LoadedModel:
    """Build `module`'s base model on `device` with LoRA weights from `adapter` or `ckpt_path` (as returned by
    `choose_weights`; neither: the base alone), in eval mode.

    A checkpoint is loaded into the module's own model (the training layout); an adapter directory goes through
    peft's `PeftModel.from_pretrained` on a freshly loaded quantized base.
    """
    from nextai.data.tokenize import load_tokenizer
    from nextai.modules.loading import load_for_inference
    from nextai.tiny import resolve_pretrained

    hp = module.hparams
    description = {"base_model": hp.base_model, "adapter": adapter, "checkpoint": ckpt_path,
                   "quantization": "4-bit" if module.quantization.enabled else "none", "device": str(device)}
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            raise NextaiError(f"checkpoint not found: {ckpt_path}")
        module.build_model(device)
        module.load_trainable_weights(ckpt_path)
        model = module.model
    else:
        if adapter is not None:
            check_adapter_base(Path(adapter), hp.base_model)
        model = load_for_inference(hp.base_model, adapter, module.quantization, hp.attn_implementation, device)
    model.eval()
    log.info("evaluating %s%s on %s", hp.base_model,
             f" + {adapter or ckpt_path}" if (adapter or ckpt_path) else " (no adapter)", device)
    return LoadedModel(model, load_tokenizer(resolve_pretrained(hp.base_model)), description)


def check_adapter_base(adapter: Path, base_model: str) -> None:
    """Warn when an adapter was trained on another base than the one configured (its weights would not fit)."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise NextaiError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    from nextai.tiny import resolve_pretrained

    trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
    if trained_on and trained_on not in (base_model, resolve_pretrained(base_model)):
        log.warning("adapter %s was trained on %s; the configured base is %s", adapter, trained_on, base_model)
