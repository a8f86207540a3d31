"""One process of a CPU (gloo) FSDP run of the tiny 4-bit model, started by torchrun from test_fsdp_cpu.py.

The model is wrapped as nextai's FSDP strategy wraps it (decoder layers and LoRA leaves as units, use_orig_params,
bf16 4-bit storage, decoder layers recomputed) and trained with torch's AdamW; checkpoints are written and read
with nextai.fsdp.checkpoint, as nextai's FSDP strategy writes and reads them. Lightning itself refuses
FSDP on a CPU, so the loop here is plain. Every optimizer step sees the same 4 sequences whatever the number of
processes (each process takes every other one), all of equal length and fully labelled, so the averaged gradient
is the same mean as in one process.

    torchrun --standalone --nproc-per-node N fsdp_worker.py OUT [--resume CKPT] [--save-at K] [--steps S]
"""

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import ShardingStrategy
from torch.distributed.fsdp.wrap import CustomPolicy

from nextai.fsdp.checkpoint import (full_optimizer_state, gather_trainable_state, load_full_optimizer_states,
                                    load_trainable_state)
from nextai.modules.qlora import QLoRAModule
from nextai.modules.quantization import Quantization
from nextai.fsdp.strategy import is_decoder_layer, wraps_as_unit

SEQUENCES, LENGTH = 4, 24


def batch_of(step: int, rank: int, world: int) -> dict:
    generator = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(3, 200, (SEQUENCES, LENGTH), generator=generator)[rank::world]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--save-at", type=int, default=-1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same LoRA initialisation in every process
    module = QLoRAModule(base_model="tiny", quantization=Quantization(bnb_4bit_quant_storage="bfloat16"),
                         attn_implementation="sdpa", lora_r=8, lora_dropout=0.0, lora_targets="all",
                         optimizer="adamw")
    module.build_model("cpu", "fsdp")
    layers = frozenset({"LlamaDecoderLayer"})
    model = FSDP(module, auto_wrap_policy=CustomPolicy(partial(wraps_as_unit, layer_names=layers)),
                 use_orig_params=True, sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=torch.device("cpu"))
    apply_activation_checkpointing(model, check_fn=partial(is_decoder_layer, layer_names=layers))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = 0
    if args.resume is not None:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        module.check_saved_weights(checkpoint["state_dict"])
        load_trainable_state(model, checkpoint["state_dict"])
        load_full_optimizer_states(model, [optimizer], checkpoint["optimizer_states"])
        first = checkpoint["step"]
        loaded = {"state_dict": gather_trainable_state(model),
                  "optimizer_states": [full_optimizer_state(model, optimizer)]}
        if rank == 0:
            torch.save(loaded, args.out / "loaded.pt")
    for step in range(first, args.steps):
        loss = model(batch_of(step, rank, world)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step + 1 == args.save_at:
            checkpoint = {"step": step + 1, "state_dict": gather_trainable_state(model),
                          "optimizer_states": [full_optimizer_state(model, optimizer)]}
            if rank == 0:
                torch.save(checkpoint, args.out / "checkpoint.pt")
    final = gather_trainable_state(model)
    if rank == 0:
        torch.save(final, args.out / "final.pt")
    # Every rank leaves together: a rank that tore gloo down while another was still in a collective or saving
    # aborted now and then ("terminate called without an active exception", SIGABRT, in CI).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
    # Everything is saved; leave without the interpreter's finalization. FSDP's units still hold the gloo group
    # after destroy_process_group, and its worker threads freed at finalization aborted a rank now and then even
    # after the barrier (SIGABRT, "terminate called without an active exception", once in a CI run).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
