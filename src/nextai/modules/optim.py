"""Optimizer and learning-rate schedule: bitsandbytes' 8-bit AdamW (paged by default) or torch's AdamW,
cosine (or any transformers schedule) with linear warmup counted in optimizer steps."""

from collections.abc import Iterable
from typing import Literal, get_args

import torch

from nextai.errors import NextaiError

OptimizerName = Literal["paged_adamw_8bit", "adamw_8bit", "adamw"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
# Optimizer state per trainable parameter: AdamW's two moments, in 8 bits (bitsandbytes) or fp32 (torch).
STATE_BYTES_PER_PARAM: dict[str, int] = {"paged_adamw_8bit": 2, "adamw_8bit": 2, "adamw": 8}
SCHEDULES = ("cosine", "linear", "constant_with_warmup", "cosine_with_restarts", "polynomial")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise NextaiError(f"model.optimizer: unknown optimizer '{name}'; expected one of {', '.join(OPTIMIZERS)}")


def build_optimizer(name: OptimizerName, params: Iterable[torch.nn.Parameter], lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    check_optimizer(name)
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    import bitsandbytes as bnb

    if name == "paged_adamw_8bit":
        return bnb.optim.PagedAdamW8bit(params, lr=lr, weight_decay=weight_decay)
    return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)


def build_schedule(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """A transformers schedule stepped once per optimizer step."""
    from transformers import get_scheduler

    if name not in SCHEDULES:
        raise NextaiError(f"model.lr_scheduler: unknown schedule '{name}'; expected one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0:
        raise NextaiError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(total_steps, 1))
