"""`QLoRAModule`'s switches as a few typed, frozen groups: each setting's meaning and default are written once, here,
and each group checks its own values. The rules *between* settings, strategies and devices are one table,
`nextai.modules.compatibility`.

Users keep the flat names (`--model.lora_r 8`, `--model.memory_budget 36.5GiB`: the CLI reads `QLoRAModule`'s
signature, whose defaults come from these classes); `ModelSettings.from_flat` groups them, `flat()` gives them back.
"""

import ast
import inspect
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import Literal

from nextai.errors import NextaiError
from nextai.modules.attention import ATTENTION_CHOICES, AttentionChoice
from nextai.modules.nf4_dequant import DequantKernel
from nextai.modules.optim import SCHEDULES, OptimizerName, check_optimizer
from nextai.modules.quantization import Quantization


@dataclass(frozen=True)
class LoRASettings:
    r: int = 4
    """LoRA rank."""
    alpha: int = 16
    """LoRA scale numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on LoRA's input."""
    targets: str | tuple[str, ...] = "attention_ffn_output"
    """A preset of the report's Table 5 (`key_query`, `attention`, `ffn`, `all`, `attention_ffn_output`) or a list
    of module names."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the LoRA weights (and so of their gradients)."""
    lean: bool = True
    """4-bit LoRA layers keep their input and the dropout mask's seed for the backward pass instead of peft's dropout
    output and mask (the same function and gradients; 0.2 GiB less per 70B decoder layer at 4096 tokens)."""

    def check(self) -> None:
        from nextai.modules.lora import lora_config

        lora_config(self.r, self.alpha, self.dropout, list(self.targets) if isinstance(self.targets, tuple)
                    else self.targets)


@dataclass(frozen=True)
class MemorySettings:
    gradient_checkpointing: bool = True
    """Recompute the decoder layers' activations in the backward pass (non-reentrant)."""
    offload_activations: bool = False
    """Checkpointed layers keep their input in pinned CPU memory instead of on the GPU."""
    memory_budget: str | None = None
    """A cap such as `38GiB`, or `card`: per decoder layer, keep activations, recompute them or offload their input,
    whichever makes the step fastest under the cap, and hold torch's allocator to the cap."""
    kbit_preparation: bool = True
    """peft's `prepare_model_for_kbit_training`, which also upcasts the frozen embeddings, norms and output layer to
    fp32 (about 1 GiB more at 70B); false keeps them in bf16."""
    fused_cross_entropy: bool = False
    """Compute the loss without full-vocabulary logits (Liger's fused kernel on CUDA when installed, chunked torch
    otherwise)."""

    def check(self) -> None:
        if self.memory_budget not in (None, "card"):
            import torch

            from nextai.modules.memory_plan import budget_bytes

            budget_bytes(self.memory_budget, torch.device("cpu"))  # parse now: a bad value fails before loading


@dataclass(frozen=True)
class KernelSettings:
    attn_implementation: AttentionChoice = "auto"
    """`auto` picks flash_attention_2 when flash-attn imports and a GPU is present, else sdpa; or `sdpa`, `eager`."""
    liger_kernels: bool = False
    """Liger-kernel's fused RMSNorm, SwiGLU and RoPE (CUDA)."""
    compile_layers: bool = False
    """`torch.compile` each decoder layer (its forward and recomputation)."""
    dequant_kernel: DequantKernel = "auto"
    """The kernel that dequantizes each NF4 weight before its GEMMs: `triton` (CUDA; nextai's, bit-equal to
    bitsandbytes and faster; the lean LoRA layers then also compute LoRA's input side and its dropout in fused
    Triton kernels), `bitsandbytes`, or `auto` (Triton on CUDA when it imports)."""
    base_matmul: Literal["bf16", "fp8"] = "bf16"
    """The frozen base's GEMMs (forward, recomputation, input gradient): `bf16`, or `fp8` on Hopper (e4m3 with
    rowwise scales, NF4 dequantized straight to FP8; LoRA, norms, attention and the loss stay bf16; validation and
    generation run bf16). See docs/fp8.md for its error and loss cost."""

    def check(self) -> None:
        if self.base_matmul not in ("bf16", "fp8"):
            raise NextaiError(f"model.base_matmul must be bf16 or fp8, got '{self.base_matmul}'")
        if self.attn_implementation not in ATTENTION_CHOICES:
            raise NextaiError(f"model.attn_implementation: unknown value '{self.attn_implementation}'; "
                              f"expected one of {', '.join(ATTENTION_CHOICES)}")


@dataclass(frozen=True)
class OptimizerSettings:
    name: OptimizerName = "paged_adamw_8bit"
    """`paged_adamw_8bit` (bitsandbytes), `adamw_8bit` or `adamw` (torch)."""
    learning_rate: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    lr_scheduler: str = "cosine"
    """transformers schedule name, stepped every optimizer step after `warmup_steps` of linear warmup."""
    warmup_steps: int = 100
    """Optimizer steps of linear warmup."""

    def check(self) -> None:
        check_optimizer(self.name)
        if self.lr_scheduler not in SCHEDULES:
            raise NextaiError(f"model.lr_scheduler: unknown schedule '{self.lr_scheduler}'; "
                              f"expected one of {', '.join(SCHEDULES)}")
        if self.learning_rate <= 0:
            raise NextaiError(f"model.learning_rate must be positive, got {self.learning_rate}")


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides how the model is built and trained, grouped."""

    base_model: str = "tiny"
    """Hub id (`meta-llama/Llama-2-70b-hf`), local directory, a `.gguf` file, or `tiny` (the embedded default)."""
    quantization: Quantization = field(default_factory=Quantization)
    """bitsandbytes settings (report Table 2 by default)."""
    cutoff_len: int = 1024
    """Longest training sequence (linked from `data.cutoff_len`); checked against the model's positions."""
    packing: bool = False
    """Batches are padding-free packs (linked from `data.packing`): picks a varlen attention kernel."""
    micro_batch_tokens: int | None = None
    """Most tokens in one micro batch (linked from the data settings); sizes the memory plan."""
    lora: LoRASettings = LoRASettings()
    memory: MemorySettings = MemorySettings()
    kernels: KernelSettings = KernelSettings()
    optimizer: OptimizerSettings = OptimizerSettings()

    def check(self) -> None:
        """Every value that can never work fails here, before any data or weights are touched."""
        if self.cutoff_len <= 0:
            raise NextaiError(f"cutoff_len must be a positive number of tokens, got {self.cutoff_len}")
        for group in (self.lora, self.memory, self.kernels, self.optimizer):
            group.check()

    # -------------------------------------------------------------------------------------- the flat names
    @classmethod
    def from_flat(cls, **flat) -> "ModelSettings":
        """Settings from the flat names users write (`lora_r=8`); names left out keep their defaults (checkpoints
        saved before a setting existed)."""
        top, groups = {}, {group: {} for group in GROUPS}
        for name, value in flat.items():
            if name in FLAT:
                group, attribute = FLAT[name]
                groups[group][attribute] = tuple(value) if isinstance(value, list) else value
            elif name in TOP_LEVEL:
                top[name] = value
            else:
                raise NextaiError(f"model.{name}: unknown setting; known: {', '.join(flat_names())}")
        return cls(**top, **{group: GROUPS[group](**values) for group, values in groups.items()})

    def flat(self) -> dict:
        """The settings under their flat names (what `from_flat` takes)."""
        values = {name: getattr(self, name) for name in TOP_LEVEL}
        for name, (group, attribute) in FLAT.items():
            values[name] = getattr(getattr(self, group), attribute)
        return values

    def replace(self, **flat) -> "ModelSettings":
        """A copy with some settings changed, by their flat names."""
        return ModelSettings.from_flat(**{**self.flat(), **flat})

    def asdict(self) -> dict:
        return asdict(self)


GROUPS = {"lora": LoRASettings, "memory": MemorySettings, "kernels": KernelSettings, "optimizer": OptimizerSettings}
TOP_LEVEL = ("base_model", "quantization", "cutoff_len", "packing", "micro_batch_tokens")
# The flat names users write, and where each lives. Every setting has exactly one.
FLAT: dict[str, tuple[str, str]] = {
    "lora_r": ("lora", "r"), "lora_alpha": ("lora", "alpha"), "lora_dropout": ("lora", "dropout"),
    "lora_targets": ("lora", "targets"), "lora_dtype": ("lora", "dtype"), "lean_lora": ("lora", "lean"),
    "gradient_checkpointing": ("memory", "gradient_checkpointing"),
    "offload_activations": ("memory", "offload_activations"), "memory_budget": ("memory", "memory_budget"),
    "kbit_preparation": ("memory", "kbit_preparation"), "fused_cross_entropy": ("memory", "fused_cross_entropy"),
    "attn_implementation": ("kernels", "attn_implementation"), "liger_kernels": ("kernels", "liger_kernels"),
    "compile_layers": ("kernels", "compile_layers"), "dequant_kernel": ("kernels", "dequant_kernel"),
    "base_matmul": ("kernels", "base_matmul"),
    "optimizer": ("optimizer", "name"), "learning_rate": ("optimizer", "learning_rate"),
    "weight_decay": ("optimizer", "weight_decay"), "lr_scheduler": ("optimizer", "lr_scheduler"),
    "warmup_steps": ("optimizer", "warmup_steps"),
}


def flat_names() -> tuple[str, ...]:
    return (*TOP_LEVEL, *FLAT)


def default(name: str):
    """The default of a flat setting (the one place defaults are written: the classes above)."""
    if name in FLAT:
        group, attribute = FLAT[name]
        return next(f for f in fields(GROUPS[group]) if f.name == attribute).default
    return next(f for f in fields(ModelSettings) if f.name == name).default


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a settings class, by field name."""
    tree = ast.parse(inspect.getsource(cls))
    docs, previous = {}, None
    for node in tree.body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            previous = node.target.id
        elif (previous and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
              and isinstance(node.value.value, str)):
            docs[previous] = " ".join(node.value.value.split())
            previous = None
        else:
            previous = None
    return docs


def flat_help() -> dict[str, str]:
    """Each flat setting's description, from the field docstrings (for the CLI's help)."""
    helps = {name: field_docs(ModelSettings).get(name, "") for name in TOP_LEVEL}
    for name, (group, attribute) in FLAT.items():
        helps[name] = field_docs(GROUPS[group]).get(attribute, "")
    return helps


__all__ = ["FLAT", "GROUPS", "KernelSettings", "LoRASettings", "MemorySettings", "ModelSettings", "OptimizerSettings",
           "default", "flat_help", "flat_names", "replace"]
