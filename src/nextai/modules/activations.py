"""What each decoder layer keeps for the backward pass: everything, its input only (recompute), or nothing on the
GPU (its input offloaded to pinned CPU memory, copied back ahead of its backward).

transformers checkpoints a decoder layer through two attributes of the layer (`gradient_checkpointing`, and the
function in `_gradient_checkpointing_func`); setting them per layer lets a memory budget choose the fastest mix.
Offloading runs torch's reentrant checkpoint, whose only saved tensors are the layer's inputs, under
`saved_tensors_hooks` that copy those inputs to pinned host buffers on a side stream (overlapping the next
layers' forward) and prefetch each one back while the layer after it runs its backward.
"""

import functools
from collections import deque
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

LayerPolicy = Literal["keep", "recompute", "offload"]
OFFLOAD_MIN_BYTES = 1 << 20  # small saved tensors (rotary tables, masks) stay on the GPU


def decoder_layers(model) -> list[torch.nn.Module]:
    """The model's decoder layers, in order (LLaMA-style `model.layers`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return list(decoder.layers)


class PinnedOffloader:
    """Saved-tensor hooks that park large activations in reusable pinned host buffers.

    Pack: copy to a pinned buffer on `copy_stream` after the compute stream reaches that point; the GPU tensor is
    released once the copy is done (`record_stream`). Unpack: tensors come back in the reverse order of packing
    (the backward pass), so unpacking one starts the copy of the previous one on `copy_stream`, into memory
    allocated on the compute stream: blocks cached for the copy stream could not serve the compute stream, which
    under a memory cap fragments what the allocator may reserve.
    """

    def __init__(self) -> None:
        self.copy_stream: torch.cuda.Stream | None = None
        self._free: list[tuple[torch.Tensor, torch.cuda.Event]] = []  # (pinned bytes, free once this event ran)
        self._packed: deque[dict] = deque()

    def _buffer(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A pinned host view for `tensor`: an idle buffer large enough, else a new one rounded up to a power of
        two (packs vary in length; pinned allocations are slow, so buffers are reused across steps)."""
        nbytes = tensor.numel() * tensor.element_size()
        for i, (buffer, released) in enumerate(self._free):
            if buffer.numel() >= nbytes and released.query():
                self._free.pop(i)
                break
        else:
            buffer = torch.empty(1 << max(nbytes - 1, 1).bit_length(), dtype=torch.uint8, pin_memory=True)
        return buffer, buffer[:nbytes].view(tensor.dtype).view(tensor.shape)

    def pack(self, tensor: torch.Tensor):
        if not tensor.is_cuda or tensor.numel() * tensor.element_size() < OFFLOAD_MIN_BYTES:
            return tensor
        if self.copy_stream is None:
            self.copy_stream = torch.cuda.Stream(tensor.device)
        buffer, host = self._buffer(tensor)
        self.copy_stream.wait_stream(torch.cuda.current_stream(tensor.device))
        with torch.cuda.stream(self.copy_stream):
            host.copy_(tensor, non_blocking=True)
            tensor.record_stream(self.copy_stream)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        item = {"host": host, "base": buffer, "copied": copied,
                "device": tensor.device, "gpu": None, "ready": None}
        self._packed.append(item)
        return item

    def _fetch(self, item: dict) -> None:
        host = item["host"]
        gpu = torch.empty(host.shape, dtype=host.dtype, device=item["device"])  # in the compute stream's pool
        self.copy_stream.wait_stream(torch.cuda.current_stream(item["device"]))  # its block may just have been freed
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(item["copied"])
            gpu.copy_(host, non_blocking=True)
            item["gpu"] = gpu
            item["ready"] = torch.cuda.Event()
            item["ready"].record(self.copy_stream)

    def unpack(self, item):
        if isinstance(item, torch.Tensor):
            return item
        if item["gpu"] is None:
            self._fetch(item)
        # Prefetch the tensor the backward pass will need next (the one packed before this one).
        position = next((i for i, other in enumerate(self._packed) if other is item), None)
        if position is not None:
            del self._packed[position]
            if position > 0 and self._packed[position - 1]["gpu"] is None:
                self._fetch(self._packed[position - 1])
        current = torch.cuda.current_stream(item["device"])
        current.wait_event(item["ready"])
        tensor = item["gpu"]
        released = torch.cuda.Event()
        released.record(current)
        self._free.append((item["base"], released))
        item["gpu"] = None
        return tensor

    def checkpoint(self, function, *args, **kwargs):
        """transformers' `_gradient_checkpointing_func` for an offloaded layer."""
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            return checkpoint(function, *args, use_reentrant=True, **kwargs)

    def reset(self) -> None:
        """Forget tensors packed by a forward whose backward never ran (an exception, a skipped step)."""
        self._packed.clear()


def apply_layer_policies(model, policies: list[LayerPolicy], offloader: PinnedOffloader | None = None) -> None:
    """Set each decoder layer to keep its activations, recompute them, or recompute from an offloaded input."""
    layers = decoder_layers(model)
    if len(policies) != len(layers):
        raise ValueError(f"{len(policies)} policies for {len(layers)} decoder layers")
    recompute = functools.partial(checkpoint, use_reentrant=False)
    for layer, policy in zip(layers, policies):
        layer.gradient_checkpointing = policy != "keep"
        if policy == "recompute":
            layer._gradient_checkpointing_func = recompute
        elif policy == "offload":
            if offloader is None:
                raise ValueError("an offload policy needs a PinnedOffloader")
            layer._gradient_checkpointing_func = offloader.checkpoint


def describe_policies(policies: list[LayerPolicy]) -> str:
    counts = {p: policies.count(p) for p in ("keep", "recompute", "offload") if policies.count(p)}
    return ", ".join(f"{n} layers {p}" for p, n in counts.items())
