"""One table of what a setting does with each strategy and device: every refusal and every automatic change of the
model's settings comes from `RULES`, and each change is logged once. The README renders it (`markdown_table`).

`resolve(settings, strategy, device)` applies the table: a refusal is one line naming the setting; a change gives
settings that say what will run. With the strategy or device not known yet (`None`), only the rules that hold
everywhere are applied, so `QLoRAModule` refuses impossible combinations at construction, before any data or
weights are touched.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nextai.errors import NextaiError
from nextai.modules.settings import ModelSettings

log = logging.getLogger(__name__)

StrategyKind = Literal["single", "ddp", "fsdp"]
DeviceType = Literal["cpu", "cuda"]
FSDP_STRATEGIES = ("fsdp", "fsdp_cpu_offload")  # Lightning's registered FSDP names nextai configures for QLoRA


def strategy_kind(strategy) -> StrategyKind:
    """What a strategy (a name as given to the Trainer, a class_path, or a strategy object) does with the model:
    shards it (`fsdp`), replicates it (`ddp`), or neither (`single`). The one test of "is this nextai's FSDP"."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    if isinstance(strategy, FSDPStrategy):
        return "fsdp"
    if isinstance(strategy, DDPStrategy):
        return "ddp"
    name = strategy if isinstance(strategy, str) else getattr(strategy, "class_path", None)
    if isinstance(name, str):
        if name in FSDP_STRATEGIES or name.endswith("FSDPStrategy"):
            return "fsdp"
        if name.startswith("ddp") or name.endswith("DDPStrategy"):
            return "ddp"
    return "single"


@dataclass(frozen=True)
class Rule:
    """When `applies` holds for the settings on `strategy` (any, or one kind) and `device` (any, or not CUDA): refuse
    with `message` (no `change`), or change the settings. `when`, `outcome` and `reason` are the table's cells."""

    setting: str  # the flat name users write
    when: str
    applies: Callable[[ModelSettings], bool]
    reason: str
    strategy: StrategyKind | Literal["any"] = "any"
    device: Literal["any", "not cuda"] = "any"
    change: Callable[[ModelSettings], ModelSettings] | None = None
    outcome: str = "refused"
    message: str = ""  # a refusal's one line; {device} and {value} are filled in

    def matches(self, settings: ModelSettings, strategy: StrategyKind | None, device: str | None) -> bool:
        if self.strategy != "any" and strategy != self.strategy:
            return False
        if self.device == "not cuda" and device in (None, "cuda"):
            return False
        return self.applies(settings)


def _is_set(name: str) -> Callable[[ModelSettings], bool]:
    return lambda settings: bool(settings.flat()[name])


def _cuda_only(name: str, why: str, applies: Callable[[ModelSettings], bool] | None = None,
               when: str = "set") -> Rule:
    return Rule(name, when, applies or _is_set(name), f"needs a CUDA GPU ({why})", device="not cuda",
                message=f"model.{name} needs a CUDA GPU ({why}); this run is on the {{device}}")


def _single_gpu_lever(name: str, applies: Callable[[ModelSettings], bool] | None = None, when: str = "set") -> Rule:
    return Rule(name, when, applies or _is_set(name), "a single-GPU lever: the strategy shards the weights and "
                "recomputes the decoder layers", strategy="fsdp",
                message=f"model.{name} is a single-GPU lever; with trainer.strategy fsdp the strategy shards the "
                        "weights and recomputes the decoder layers: leave it unset")


RULES: tuple[Rule, ...] = (  # in this order: a strategy's refusals come before a device's
    # -------------------------------------------------------------------------------- FSDP
    _single_gpu_lever("offload_activations"),
    _single_gpu_lever("memory_budget"),
    _single_gpu_lever("compile_layers"),
    _single_gpu_lever("base_matmul", lambda s: s.kernels.base_matmul == "fp8", when="fp8"),
    Rule("optimizer", "paged_adamw_8bit or adamw_8bit", lambda s: s.optimizer.name != "adamw",
         "8-bit states belong to each process's shard and cannot be gathered into a checkpoint (bitsandbytes#89, "
         "#2080)", strategy="fsdp",
         message="model.optimizer {value} keeps 8-bit states per FSDP shard, which cannot be gathered into a "
                 "checkpoint; with trainer.strategy fsdp use model.optimizer adamw (fp32 states of the LoRA weights "
                 "only: megabytes)"),
    Rule("lean_lora", "true", lambda s: s.lora.lean,
         "FSDP gathers each LoRA weight in its own unit's forward, which the lean layer skips",
         strategy="fsdp", change=lambda s: s.replace(lean_lora=False), outcome="false: peft's layers run"),
    Rule("kbit_preparation", "true", lambda s: s.memory.kbit_preparation,
         "every FSDP unit flattens one dtype, so the frozen weights stay bf16",
         strategy="fsdp", change=lambda s: s.replace(kbit_preparation=False), outcome="false"),
    # -------------------------------------------------------------------------------- devices
    _cuda_only("liger_kernels", "Liger's kernels are Triton"),
    _cuda_only("offload_activations", "pinned host memory and CUDA streams"),
    _cuda_only("memory_budget", "it measures a layer on the GPU and caps torch's CUDA allocator"),
    _cuda_only("dequant_kernel", "nextai's NF4 kernel is Triton", lambda s: s.kernels.dequant_kernel == "triton",
               when="triton"),
    _cuda_only("base_matmul", "Hopper's FP8 tensor cores, compute capability 9.0", lambda s: s.kernels.base_matmul == "fp8",
               when="fp8"),
    # -------------------------------------------------------------------------------- settings with each other
    Rule("compile_layers", "with model.offload_activations",
         lambda s: s.kernels.compile_layers and s.memory.offload_activations,
         "torch.compile does not trace the offloading hooks",
         message="model.compile_layers with model.offload_activations: torch.compile does not trace the offloading "
                 "hooks, so the layers would run uncompiled; choose one"),
    Rule("compile_layers", "true", lambda s: s.kernels.compile_layers and s.lora.lean,
         "torch.compile does not trace the lean LoRA layers (custom autograd functions)",
         change=lambda s: s.replace(lean_lora=False), outcome="model.lean_lora false"),
    Rule("base_matmul", "fp8 without the lean LoRA layers or the Triton kernel",
         lambda s: s.kernels.base_matmul == "fp8" and (not s.lora.lean or s.kernels.dequant_kernel == "bitsandbytes"),
         "its GEMMs live in the lean layers, and NF4 is dequantized straight to FP8 by the Triton kernel",
         message="model.base_matmul fp8 needs the lean LoRA layers and the Triton kernel (model.lean_lora true, "
                 "model.dequant_kernel triton or auto, not model.compile_layers)"),
    Rule("memory_budget", "set with gradient_checkpointing false or offload_activations true",
         lambda s: s.memory.memory_budget is not None and (not s.memory.gradient_checkpointing
                                                            or s.memory.offload_activations),
         "the plan chooses keep, recompute or offload for each layer",
         change=lambda s: s.replace(gradient_checkpointing=True, offload_activations=False),
         outcome="both decided per layer by the plan"),
)


_logged: set[tuple[str, str]] = set()


def resolve(settings: ModelSettings, strategy: StrategyKind | None = None,
            device: str | None = None) -> ModelSettings:
    """The settings that will run on `strategy` and `device` (see the module docstring)."""
    for rule in RULES:
        if not rule.matches(settings, strategy, device):
            continue
        if rule.change is None:
            raise NextaiError(rule.message.format(device=device, value=settings.flat()[rule.setting]))
        settings = rule.change(settings)
        if (rule.setting, rule.outcome) not in _logged:
            _logged.add((rule.setting, rule.outcome))
            log.info("settings: model.%s %s -> %s (%s)", rule.setting, rule.when, rule.outcome, rule.reason)
    return settings


def markdown_table() -> str:
    """The rules as the README shows them."""
    lines = ["| setting | when | strategy | device | what happens | why |", "|---|---|---|---|---|---|"]
    for rule in RULES:
        device = "not CUDA" if rule.device == "not cuda" else rule.device
        lines.append(f"| `model.{rule.setting}` | {rule.when} | {rule.strategy} | {device} | {rule.outcome} | "
                     f"{rule.reason} |")
    return "\n".join(lines)
