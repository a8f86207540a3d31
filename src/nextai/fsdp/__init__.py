"""FSDP for a 4-bit base with LoRA: the strategy (`strategy`) and its adapter-sized checkpoints (`checkpoint`).

Above `modules/`: it uses the model, the model never imports it. Whether a strategy is nextai's FSDP is one
predicate, `nextai.modules.compatibility.strategy_kind`.
"""
