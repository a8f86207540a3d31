"""Named training recipes for `nextai bench`: data batching plus model switches, with `name:key=value` overrides.

All start from the report's LoRA and optimizer settings (r=4, alpha 16, dropout 0.05 on o_proj + down_proj,
paged 8-bit AdamW); the report's own recipe (micro batch 1, batch 4, cutoff 1024) is `report`.
"""

from dataclasses import dataclass, field, replace

import yaml

from nextai.errors import NextaiError
from nextai.modules.settings import FLAT, ModelSettings

DATA_KEYS = ("packing", "pack_length", "micro_batch_size", "batch_size", "cutoff_len")
MODEL_KEYS = tuple(FLAT)  # every model setting, by its flat name
# Settings that need the base model loaded again (the rest can change on a loaded base).
LOAD_KEYS = ("attn_implementation", "kbit_preparation", "liger_kernels", "compile_layers", "lora_dtype", "packing")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    def value(self, key: str):
        return {**DEFAULT_DATA, **self.data, **DEFAULT_MODEL, **self.model}[key]

    def load_key(self) -> tuple:
        return tuple(self.value(k) for k in LOAD_KEYS)

    def model_kwargs(self) -> dict:
        return {**DEFAULT_MODEL, **self.model}

    def data_kwargs(self) -> dict:
        return {**DEFAULT_DATA, **self.data}


DEFAULT_DATA = dict(packing=False, pack_length=4096, micro_batch_size=1, batch_size=4, cutoff_len=1024)
# The report's model settings: nextai's defaults without its own speed-ups (lean LoRA layers, the Triton kernel).
DEFAULT_MODEL = {**{key: value for key, value in ModelSettings().flat().items() if key in MODEL_KEYS},
                 "lean_lora": False, "dequant_kernel": "bitsandbytes"}
PACKED = dict(packing=True, micro_batch_size=1, batch_size=1)
LEAN = dict(kbit_preparation=False, fused_cross_entropy=True)
# Liger's fused norms/SwiGLU/RoPE, LoRA layers that keep no dropout copies, NF4 dequantized by nextai's Triton kernel.
KERNELS = dict(**LEAN, liger_kernels=True, lean_lora=True, dequant_kernel="triton")

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("report", "the report's recipe: micro batch 1, batch 4, cutoff 1024, every layer recomputed"),
    Recipe("packed", "packs of 4096 tokens, otherwise the report's model settings", PACKED),
    Recipe("lean", "packed; frozen weights kept bf16, loss without full logits", PACKED, LEAN),
    Recipe("kernels", "lean + Liger RMSNorm/SwiGLU/RoPE, lean LoRA layers, Triton NF4 dequantization", PACKED, KERNELS),
    Recipe("capped", "kernels, packs of 4096 tokens, activations planned and torch's allocator held under 36.5 GiB "
           "(an A100-40GB with room for the CUDA context)", PACKED, {**KERNELS, "memory_budget": "36.5GiB"}),
    Recipe("fast", "kernels, activations planned for the whole card", PACKED, {**KERNELS, "memory_budget": "card"}),
]}


def parse_recipe(spec: str) -> Recipe:
    """`NAME` or `NAME:key=value,key=value` (values read as YAML scalars), e.g. `report:lora_r=64`."""
    name, _, overrides = spec.partition(":")
    if name not in RECIPES:
        raise NextaiError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    data, model = dict(recipe.data), dict(recipe.model)
    for item in filter(None, overrides.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise NextaiError(f"recipe '{spec}': '{item}' is not key=value")
        value = yaml.safe_load(raw)
        if key in DATA_KEYS:
            data[key] = value
        elif key in MODEL_KEYS:
            model[key] = value
        else:
            raise NextaiError(f"recipe '{spec}': unknown key '{key}'; keys: {', '.join(DATA_KEYS + MODEL_KEYS)}")
    label = spec if overrides else name
    return replace(recipe, name=label, data=data, model=model)
