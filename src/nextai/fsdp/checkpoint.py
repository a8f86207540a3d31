"""Adapter-sized checkpoints under FSDP: only the trainable (LoRA) weights are gathered, saved and written back.

Lightning's `FSDPStrategy` gathers a full state dict of the whole model for every checkpoint and then lets the
module drop what it does not keep: at 70B that is 35 GB of frozen 4-bit weights moved to the CPU per save. It also
fails outright on one device: FSDP then runs `NO_SHARD`, leaves the root unit's frozen parameters (embeddings,
final norm, head) unregistered after the backward pass, and its state-dict hook asserts that they are missing.
Here each LoRA unit (a leaf whose weights all train: see `nextai.fsdp.strategy.wraps_as_unit`) is gathered on its own
with `FSDP.summon_full_params`, which costs a few megabytes and works for any number of processes, so a checkpoint
saved on N devices loads onto M.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from nextai.errors import NextaiError
from nextai.internals import initialise_fsdp_root

# What FSDP and activation checkpointing put in front of a parameter's name; state dicts are keyed without them.
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def clean_name(name: str) -> str:
    """A parameter or module name as the unwrapped model has it (torch's own state dicts strip the same)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def trainable_units(root: FSDP) -> Iterator[tuple[str, FSDP]]:
    """(clean name, unit) for every FSDP unit that wraps a leaf whose parameters all train.

    The root is initialised first, as FSDP's own state-dict hooks do: a checkpoint can be read before the first
    forward pass, and a unit used on its own before that would take itself for the root."""
    initialise_fsdp_root(root)
    for name, module in root.named_modules():
        if not isinstance(module, FSDP):
            continue
        inner = module.module
        parameters = list(inner.parameters())
        if parameters and not list(inner.children()) and all(p.requires_grad for p in parameters):
            yield clean_name(name), module


def gather_trainable_state(root: FSDP) -> dict[str, torch.Tensor]:
    """The full (unsharded) trainable weights on every process, on the CPU, keyed as in the LightningModule's own
    state dict. A collective: every process calls it."""
    state = {}
    for unit_name, unit in trainable_units(root):
        with FSDP.summon_full_params(unit, recurse=False, writeback=False):
            for name, parameter in unit.module.named_parameters():
                state[f"{unit_name}.{clean_name(name)}"] = parameter.detach().to("cpu", copy=True)
    return state


def load_trainable_state(root: FSDP, state: Mapping[str, torch.Tensor]) -> None:
    """Write full trainable weights (from `gather_trainable_state`, on any number of processes) into this process's
    shards. A collective: every process calls it with the same `state`, already checked to hold every trainable
    weight (`QLoRAModule.check_saved_weights`)."""
    for unit_name, unit in trainable_units(root):
        with FSDP.summon_full_params(unit, recurse=False, writeback=True), torch.no_grad():
            for name, parameter in unit.module.named_parameters():
                parameter.copy_(state[f"{unit_name}.{clean_name(name)}"])


def full_state_dicts(root: FSDP, rank0_only: bool):
    """FSDP's full (unsharded, CPU) state-dict settings for the model and its optimizer, as Lightning uses them."""
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

    return FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT,
                                FullStateDictConfig(offload_to_cpu=True, rank0_only=rank0_only),
                                FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=rank0_only))


def full_optimizer_state(root: FSDP, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's full state, keyed by parameter name. Lightning re-keys it by parameter id, which is an index
    into `model.parameters()`: that order is not the same on one process (FSDP's NO_SHARD leaves the root's frozen
    weights unregistered) as on several, so ids saved on one count point at other weights on another. A
    collective."""
    with full_state_dicts(root, rank0_only=True):
        return FSDP.optim_state_dict(root, optimizer)


def load_full_optimizer_states(root: FSDP, optimizers: list, states: list[dict]) -> None:
    """Full optimizer states (from `full_optimizer_state`, saved on any number of processes, or keyed by id as
    Lightning saves them) into this process's optimizers, sharded for the current number of processes. A
    collective."""
    from torch.distributed.fsdp import OptimStateKeyType

    if len(optimizers) != len(states):
        raise NextaiError(f"checkpoint holds {len(states)} optimizer states, this run has {len(optimizers)} "
                          "optimizers")
    with full_state_dicts(root, rank0_only=False):
        for optimizer, state in zip(optimizers, states):
            if state["state"] and isinstance(next(iter(state["state"])), int):
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, root)
            optimizer.load_state_dict(FSDP.optim_state_dict_to_load(model=root, optim=optimizer,
                                                                    optim_state_dict=state))


class QLoRAFSDPStrategy(FSDPStrategy):
    """Lightning's `FSDPStrategy` with adapter-sized full checkpoints (see the module's docstring): the LoRA weights
    and their optimizer state (AdamW moments of the trainable weights only), in Lightning's checkpoint layout."""

    def lightning_module_state_dict(self) -> dict[str, Any]:
        state = gather_trainable_state(self.model)
        outside = sorted(set(self.lightning_module.trainable_names()) - set(state))
        if outside:  # a trainable weight that is not a LoRA unit of its own would be left out of the checkpoint
            raise NextaiError(f"fsdp: trainable weight {outside[0]} is not in a unit of its own; the auto-wrap "
                              "policy (nextai.fsdp.strategy.wraps_as_unit) must give it one")
        return state

    def optimizer_state(self, optimizer) -> dict:
        return full_optimizer_state(self.model, getattr(optimizer, "_optimizer", optimizer))

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        if not path.is_file():  # a sharded (directory) checkpoint: not written by nextai, Lightning reads it
            return super().load_checkpoint(path, weights_only=weights_only)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        # Checked before anything is written; the module's on_load_checkpoint checks the same dict again.
        self.lightning_module.check_saved_weights(checkpoint.get("state_dict", {}))
        load_trainable_state(self.model, checkpoint["state_dict"])
        optimizer_states = checkpoint.get("optimizer_states")
        if optimizer_states is not None and self.lightning_module.trainer.state.fn == TrainerFn.FITTING:
            load_full_optimizer_states(self.model, self.optimizers, optimizer_states)
        return checkpoint
