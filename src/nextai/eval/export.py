"""`nextai export`: the run's LoRA weights (its adapter, or any checkpoint) as something else runs them:

- `adapter`: a PEFT adapter directory, without merging (an intermediate checkpoint becomes one too);
- `merged`: merged into a bf16 copy of the base (peft's `merge_and_unload`), a plain transformers checkpoint
  (safetensors + config + tokenizer) for serving stacks without peft;
- `gguf`: merged, then written as one GGUF file (f16, bf16 or q8_0) for llama.cpp (`nextai.eval.gguf`).

Every export carries the run's `prompt_format.json` and a model card (`README.md`, `nextai.eval.card`); merged and
GGUF exports also carry the training format as their chat template and stop at its end-of-turn token, so a plain
`apply_chat_template` or llama.cpp asks the model as it was trained.

`base_weights` picks what the adapter is merged into: `original` (the base's own bf16 weights; what deployments
usually want) or `dequantized` (the NF4 weights the adapter was trained against, dequantized to bf16; the merged
model then computes what the 4-bit model + adapter computed, up to bf16 rounding).
"""

import json
import logging
import shutil
from pathlib import Path
from typing import Literal

import torch

from nextai.atomic import atomic_path
from nextai.errors import NextaiError, first_line
from nextai.rundir import PROMPT_FORMAT_FILE

log = logging.getLogger(__name__)

BaseWeights = Literal["original", "dequantized"]
ExportFormat = Literal["adapter", "merged", "gguf"]
FORMATS = ("adapter", "merged", "gguf")
MERGED_DIR = "merged"  # default output inside the run directory


def default_output(run_directory: Path, format: str, ckpt_path: str | None, gguf_type: str) -> Path:
    """`<run>/merged`, `<run>/adapter-<checkpoint>` (or `adapter-export` from an adapter), `<run>/gguf-<type>`."""
    if format == "merged":
        return run_directory / MERGED_DIR
    if format == "adapter":
        return run_directory / (f"adapter-{Path(ckpt_path).stem}" if ckpt_path else "adapter-export")
    return run_directory / f"gguf-{gguf_type}"


def load_bf16_base(module, base_weights: BaseWeights, device: torch.device | str):
    from transformers import AutoModelForCausalLM

    from nextai.base_model import resolve_base_model
    from nextai.modules.loading import load_causal_lm

    base_model = module.settings.base_model
    if base_weights == "dequantized":
        if not module.quantization.enabled:
            raise NextaiError("base_weights=dequantized needs a quantized base (model.quantization)")
        model = load_causal_lm(base_model, module.quantization, "sdpa", device)
        return model.dequantize().to(torch.bfloat16)
    if base_weights != "original":
        raise NextaiError(f"base_weights must be 'original' or 'dequantized', got {base_weights!r}")
    try:
        return AutoModelForCausalLM.from_pretrained(resolve_base_model(base_model), dtype=torch.bfloat16,
                                                    device_map={"": torch.device(device)})
    except (OSError, ValueError) as err:
        raise NextaiError(f"cannot load model '{base_model}': {first_line(err)}") from None


def merged_model(module, adapter: str | None, ckpt_path: str | None, base_weights: BaseWeights,
                 device: torch.device | str):
    """The bf16 base with the LoRA weights of `adapter` or `ckpt_path` merged in."""
    from peft import PeftModel

    from nextai.eval.model import attach_checkpoint, check_adapter_base

    base = load_bf16_base(module, base_weights, device)
    if ckpt_path is not None:
        model = attach_checkpoint(module, base, ckpt_path)
    else:
        check_adapter_base(Path(adapter), module.settings.base_model)
        model = PeftModel.from_pretrained(base, adapter)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    return merged


def recorded_format(adapter: str | None, ckpt_path: str | None, run_directory: Path):
    """The run's PromptFormat and the file it is in (None, None when it recorded none)."""
    from nextai.data.prompt import PromptFormat
    from nextai.eval.prompting import weights_directory

    directory = weights_directory(adapter, ckpt_path, run_directory)
    found = PromptFormat.load(directory) if directory is not None else None
    return (found, directory / PROMPT_FORMAT_FILE) if found is not None else (None, None)


def stop_at_end_of_turn(model, tokenizer, prompt_format) -> None:
    """generation_config's eos_token_id: EOS and the chat template's end of turn (transformers' `generate` then
    stops where nextai stops)."""
    if prompt_format is None:
        return
    ids = prompt_format.stop_tokens(tokenizer)
    if len(ids) > 1 and model.generation_config is not None:
        model.generation_config.eos_token_id = ids


def export_run(module, datamodule, adapter: str | None, ckpt_path: str | None, output: str | Path | None,
               run_directory: Path, format: ExportFormat = "merged", gguf_type: str = "q8_0",
               base_weights: BaseWeights = "original", device: torch.device | str = "cpu") -> Path:
    """`NextaiTrainer.export`: the run's adapter (or `adapter`, or `ckpt_path`) as `format`, written atomically."""
    from nextai.eval.model import choose_weights

    if format not in FORMATS:
        raise NextaiError(f"export: --format must be one of {', '.join(FORMATS)}, got {format!r}")
    from nextai.eval.gguf import GGUF_TYPES

    if format == "gguf" and gguf_type not in GGUF_TYPES:
        raise NextaiError(f"export: --gguf_type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    adapter, ckpt_path = choose_weights(adapter, ckpt_path, run_directory)
    if adapter is None and ckpt_path is None:
        raise NextaiError(f"nothing to {'export' if format == 'adapter' else 'merge'}: export needs --adapter "
                          f"DIRECTORY or --ckpt_path CHECKPOINT")
    output = Path(output) if output else default_output(run_directory, format, ckpt_path, gguf_type)
    prompt_format, format_file = recorded_format(adapter, ckpt_path, run_directory)
    writer = {"adapter": write_adapter_export, "merged": write_merged_export, "gguf": write_gguf_export}[format]
    with atomic_path(output) as tmp:
        tmp.mkdir(parents=True)
        extra = writer(module, adapter, ckpt_path, tmp, prompt_format, base_weights, device, gguf_type,
                       run_directory.resolve().name)
        if format_file is not None:
            shutil.copy2(format_file, tmp / PROMPT_FORMAT_FILE)
        write_export_card(tmp, format, run_directory, module.settings.base_model, adapter or ckpt_path, datamodule,
                          extra)
    log.info("exported %s of %s as %s: %s", adapter or ckpt_path, module.settings.base_model, format, output)
    return output


def write_export_card(directory: Path, format: str, run_directory: Path, base_model: str, weights: str,
                      datamodule, extra: dict) -> None:
    from nextai.eval.card import build_card, describe_data, write_card

    try:
        card = build_card(format, run_directory, base_model, str(weights), describe_data(datamodule), extra=extra)
    except Exception as err:  # noqa: BLE001 - a card must never cost the export itself
        log.warning("model card not written: %s: %s", type(err).__name__, err)
        return
    write_card(directory, card)


def write_adapter_export(module, adapter, ckpt_path, tmp: Path, prompt_format, base_weights, device, gguf_type,
                         name) -> dict:
    """The LoRA weights as a PEFT adapter: from a checkpoint through `adapter_state`, from an adapter copied."""
    from nextai.modules.adapter_state import (ADAPTER_WEIGHTS, checkpoint_lora_state, peft_state,
                                              write_adapter)
    from nextai.modules.lora import lora_config

    settings = module.settings
    base_model, lora = settings.base_model, settings.lora
    base_name = base_model if not Path(base_model).expanduser().exists() and base_model != "tiny" else None
    if ckpt_path is not None:
        from nextai.base_model import resolve_base_model

        state = peft_state(checkpoint_lora_state(ckpt_path))
        config = lora_config(lora.r, lora.alpha, lora.dropout, lora.targets)
        write_adapter(tmp, state, config, base_name or resolve_base_model(base_model))
        return {"LoRA tensors": len(state)}
    for file in ("adapter_config.json", ADAPTER_WEIGHTS):
        if not (Path(adapter) / file).is_file():
            raise NextaiError(f"{adapter}: not a PEFT adapter directory (no {file})")
        shutil.copy2(Path(adapter) / file, tmp / file)
    if base_name is not None:  # the hub id, not the local cache path peft recorded
        config = json.loads((tmp / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = base_name
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {}


def write_merged_export(module, adapter, ckpt_path, tmp: Path, prompt_format, base_weights, device, gguf_type,
                        name) -> dict:
    from nextai.base_model import resolve_base_model
    from nextai.data.tokenize import load_tokenizer
    from nextai.eval.chat_templates import export_chat_template

    merged = merged_model(module, adapter, ckpt_path, base_weights, device)
    tokenizer = load_tokenizer(resolve_base_model(module.settings.base_model))
    if prompt_format is not None and (template := export_chat_template(prompt_format)):
        tokenizer.chat_template = template
    stop_at_end_of_turn(merged, tokenizer, prompt_format)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return {"merged into": f"{base_weights} base weights (bf16)"}


def write_gguf_export(module, adapter, ckpt_path, tmp: Path, prompt_format, base_weights, device, gguf_type,
                      name) -> dict:
    from transformers import AutoConfig

    from nextai.base_model import resolve_base_model
    from nextai.data.tokenize import load_tokenizer
    from nextai.eval.chat_templates import export_chat_template
    from nextai.eval.gguf import check_llama, write_gguf

    base_directory = resolve_base_model(module.settings.base_model)
    try:
        check_llama(AutoConfig.from_pretrained(base_directory))  # before minutes of merging
    except (OSError, ValueError) as err:
        raise NextaiError(f"cannot load model '{module.settings.base_model}': {first_line(err)}") from None
    merged = merged_model(module, adapter, ckpt_path, base_weights, device)
    template = (export_chat_template(prompt_format) if prompt_format is not None else None) or \
        load_tokenizer(base_directory).chat_template  # none recorded: keep the base's own
    path = write_gguf(merged, base_directory, tmp / f"{name}-{gguf_type}.gguf", gguf_type, name, template)
    return {"GGUF type": gguf_type, "file": path.name, "merged into": f"{base_weights} base weights"}
