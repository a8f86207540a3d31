"""LoRA targets by preset name (the report's Table 5) and the peft `LoraConfig` built from them."""

from typing import Final

from nextai.errors import NextaiError

# LLaMA projection names. `attention_ffn_output` (the output projections of attention and of the FFN) is the
# report's final choice: with r=4 on LLaMA-2-70B it trains 17,039,360 parameters, 0.0247 % (Table "final").
LORA_PRESETS: Final[dict[str, tuple[str, ...]]] = {
    "key_query": ("q_proj", "k_proj"),
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "ffn": ("gate_proj", "up_proj", "down_proj"),
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "attention_ffn_output": ("o_proj", "down_proj"),
}


def lora_target_modules(targets: str | list[str]) -> list[str]:
    """A preset name, or an explicit list of module names, as the list peft expects."""
    if isinstance(targets, str):
        if targets not in LORA_PRESETS:
            raise NextaiError(f"model.lora_targets: unknown preset '{targets}'; "
                              f"presets: {', '.join(LORA_PRESETS)}, or give a list of module names")
        return list(LORA_PRESETS[targets])
    if not targets:
        raise NextaiError("model.lora_targets: the list of module names is empty")
    return list(targets)


def check_targets_exist(model, targets: list[str]) -> None:
    """Every target must name at least one module of the model (peft would only say 'not found' for all)."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in leaf_names]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if type(module).__name__.startswith("Linear")})
        raise NextaiError(f"model.lora_targets: no module named {', '.join(missing)} in this model; "
                          f"its linear layers are: {', '.join(linear)}")


def lora_config(r: int, alpha: int, dropout: float, targets: str | list[str]):
    from peft import LoraConfig

    if r <= 0:
        raise NextaiError(f"model.lora_r must be a positive integer, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise NextaiError(f"model.lora_dropout must be in [0, 1), got {dropout}")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(targets),
                      bias="none", task_type="CAUSAL_LM")
