"""The batch arithmetic, written once: how many micro batches make an optimizer step, and how many tokens a micro
batch holds. Used by the data module, the CLI (the Trainer's accumulation), `nextai bench` and `nextai plan`."""

from nextai.errors import NextaiError


def accumulation_steps(batch_size: int, micro_batch_size: int, processes: int = 1) -> int:
    """Micro batches each process accumulates so that one optimizer step sees `batch_size` examples:
    batch_size / (micro_batch_size x processes). The one place the effective batch is computed: linked into the
    Trainer for one process, set again by the CLI once the number of processes is known."""
    if micro_batch_size <= 0 or batch_size <= 0:
        raise NextaiError(f"data.batch_size ({batch_size}) and data.micro_batch_size ({micro_batch_size}) "
                          "must be positive")
    per_step = micro_batch_size * processes
    if batch_size % per_step:
        if processes == 1:
            raise NextaiError(f"data.batch_size {batch_size} is not a multiple of data.micro_batch_size "
                              f"{micro_batch_size}")
        raise NextaiError(f"data.batch_size {batch_size} is not a multiple of data.micro_batch_size "
                          f"{micro_batch_size} x {processes} processes (trainer.devices x trainer.num_nodes) = "
                          f"{per_step}: use a batch_size that is a multiple of {per_step}, or fewer processes")
    return batch_size // per_step


def micro_batch_tokens(packing: bool, pack_length: int, micro_batch_size: int, cutoff_len: int) -> int:
    """The most tokens one micro batch can hold (linked into the model, which sizes its memory plan by it)."""
    return pack_length if packing else micro_batch_size * cutoff_len


def compute_tokens(batch: list[int], lengths: list[int], packed: bool) -> int:
    """Tokens the GPU processes for the micro batch of examples `batch`: a pack's real tokens, or a padded micro
    batch's rows x longest row (what `nextai bench` times and `nextai plan` projects)."""
    return sum(lengths[i] for i in batch) if packed else len(batch) * max(lengths[i] for i in batch)
