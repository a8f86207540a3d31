"""4-bit linear layers that keep less for the backward pass, and dequantize with the chosen kernel.

peft computes LoRA on a bitsandbytes layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`, so autograd keeps
the dropout's output and its mask for every adapted projection: with the report's preset (o_proj, down_proj) at
the 70B shape and 4096 tokens, 0.42 GiB of the 1.24 GiB a decoder layer keeps. `LoRANF4Function` keeps the input
itself instead (attention already keeps it for o_proj), the small `x @ A^T` and the seed of the dropout mask, and
draws the same mask again in the backward pass: a kept layer then measured 1.03 GiB. The mask is Bernoulli(1 - p)
like peft's, drawn (`lora_dropout`: torch's generator, or Philox inside fused Triton kernels on CUDA) from a seed taken
from torch's CPU generator, which activation checkpointing and nextai's checkpoints both restore: the recomputed
forward and a resumed run draw the same masks.

`make_lean` swaps the class of peft's 4-bit LoRA layers (and, with the Triton kernel, of the plain 4-bit layers)
for subclasses whose `forward` uses these functions; weights, state dicts and adapters are untouched. Anything
peft does beyond one plain LoRA adapter (merged or disabled adapters, DoRA, mixed batches) goes to peft's own
forward. With `base_matmul="fp8"` (Hopper) the frozen base's GEMMs run in FP8 (`nextai.modules.fp8`): the
layers' dequantizer then brings its own GEMMs (`frozen_matmul`, `frozen_input_grad`).
"""

import math
from typing import Literal

import bitsandbytes as bnb
import torch
from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module
from peft.tuners.lora.bnb import Linear4bit as PeftLinear4bit

from nextai.errors import NextaiError
from nextai.modules.lora_dropout import TorchDropout, TritonDropout
from nextai.modules.nf4_dequant import DequantKernel, DequantWorkspace, dequantizer

BaseMatmul = Literal["bf16", "fp8"]


def draw_seed() -> int:
    """A mask seed from torch's CPU generator (restored by checkpoint recomputation and by resumes)."""
    return int(torch.randint(0, 2**62, (1,)).item())


def frozen_matmul(x: torch.Tensor, packed: torch.Tensor, quant_state, dequantize) -> torch.Tensor:
    """x W^T for the frozen weight: the dequantizer's own GEMM when it brings one (`fp8.Fp8Matmul.matmul`), else x
    times W dequantized in x's dtype."""
    own = getattr(dequantize, "matmul", None)
    return own(x, packed, quant_state) if own is not None else x @ dequantize(packed, quant_state, x.dtype).t()


def frozen_input_grad(grad: torch.Tensor, packed: torch.Tensor, quant_state, dequantize) -> torch.Tensor:
    """grad W, likewise (`fp8.Fp8Matmul.input_grad`)."""
    own = getattr(dequantize, "input_grad", None)
    return own(grad, packed, quant_state) if own is not None else grad @ dequantize(packed, quant_state, grad.dtype)


class FrozenNF4Function(torch.autograd.Function):
    """y = x W^T for a frozen 4-bit W, dequantized in the forward and again in the backward (nothing kept)."""

    @staticmethod
    def forward(ctx, x, packed, quant_state, dequantize):
        ctx.weight = (packed, quant_state, dequantize)
        return frozen_matmul(x, packed, quant_state, dequantize)

    @staticmethod
    def backward(ctx, grad):
        packed, quant_state, dequantize = ctx.weight
        return frozen_input_grad(grad, packed, quant_state, dequantize), None, None, None


class LoRANF4Function(torch.autograd.Function):
    """y = x W^T + s/(1-p) ((x * m) A^T) B^T for a frozen 4-bit W, LoRA weights A (r x in), B (out x r) and the
    dropout mask m drawn from `seed` by `dropout` (`lora_dropout.TorchDropout` or `TritonDropout`; p = 0: no mask).
    x is 2-D and contiguous, in the compute dtype; A and B may be fp32."""

    @staticmethod
    def forward(ctx, x, lora_A, lora_B, packed, quant_state, dequantize, scaling, p, seed, dropout=TorchDropout):
        out = frozen_matmul(x, packed, quant_state, dequantize)
        xa = dropout.project(x, lora_A.to(x.dtype), p, seed)
        scale = scaling / (1.0 - p)
        out.addmm_(xa, lora_B.to(x.dtype).t(), alpha=scale)
        ctx.save_for_backward(x, lora_A, lora_B, xa)
        ctx.weight = (packed, quant_state, dequantize)
        ctx.dropout = (scale, p, seed, dropout)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, lora_A, lora_B, xa = ctx.saved_tensors
        packed, quant_state, dequantize = ctx.weight
        scale, p, seed, dropout = ctx.dropout
        grad_x = None
        if ctx.needs_input_grad[0]:  # the base GEMM first: its dequantized weight is freed before the LoRA part
            grad_x = frozen_input_grad(grad, packed, quant_state, dequantize)
        grad_B = (grad.t() @ xa).mul_(scale).to(lora_B.dtype)
        grad_xa = (grad @ lora_B.to(grad.dtype)).mul_(scale)
        del grad
        grad_A = dropout.backward_(x, lora_A.to(x.dtype), grad_xa, grad_x, p, seed).to(lora_A.dtype)
        return grad_x, grad_A, grad_B, None, None, None, None, None, None, None


def _frozen_weight(base) -> tuple[torch.Tensor, object]:
    fix_4bit_weight_quant_state_from_module(base)  # FSDP replaces the Params4bit by a plain view
    return base.weight, base.weight.quant_state


def _apply_flat(function, base, x: torch.Tensor, *args) -> torch.Tensor:
    """`function.apply` on x as 2-D rows in `base`'s compute dtype, autocast off (every dtype is explicit); the
    result back in x's shape and dtype, as bitsandbytes' layers return it."""
    dtype = base.compute_dtype if base.compute_dtype is not None else x.dtype
    with torch.autocast(x.device.type, enabled=False):
        out = function.apply(x.to(dtype).reshape(-1, x.shape[-1]).contiguous(), *args)
    return out.reshape(*x.shape[:-1], -1).to(x.dtype)


class LeanLoraLinear4bit(PeftLinear4bit):
    """peft's LoRA layer on a bitsandbytes 4-bit linear, computed by `LoRANF4Function`."""

    nextai_dequantize = None  # set by `make_lean`
    nextai_dropout = TorchDropout

    def _plain_adapter(self, args, kwargs) -> str | None:
        """The one active adapter when this call is plain LoRA, else None (peft's own forward handles it)."""
        if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        name = self.active_adapters[0]
        if name not in self.lora_A or name in self.lora_variant or self.get_base_layer().bias is not None:
            return None
        return name

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = self._plain_adapter(args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        packed, quant_state = _frozen_weight(base)
        dropout = self.lora_dropout[name]
        p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
        seed = draw_seed() if p else 0
        return _apply_flat(LoRANF4Function, base, x, self.lora_A[name].weight, self.lora_B[name].weight, packed,
                           quant_state, self.nextai_dequantize, self.scaling[name], p, seed, self.nextai_dropout)


class DequantLinear4bit(bnb.nn.Linear4bit):
    """bitsandbytes' frozen 4-bit linear, dequantized by nextai's chosen kernel."""

    nextai_dequantize = None  # set by `make_lean`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return super().forward(x)
        packed, quant_state = _frozen_weight(self)
        return _apply_flat(FrozenNF4Function, self, x, packed, quant_state, self.nextai_dequantize)


def make_lean(model, lean_lora: bool = True, kernel: DequantKernel = "bitsandbytes",
              base_matmul: BaseMatmul = "bf16") -> str:
    """Give peft's 4-bit LoRA layers the lean forward (`lean_lora`) and, with `kernel="triton"`, every other
    frozen 4-bit linear the Triton dequantization (the lean layers use `kernel` too, and compute LoRA's input side
    with its dropout mask in fused Triton kernels: `lora_dropout.TritonDropout`); returns what changed.
    `base_matmul="fp8"` (Hopper; needs `lean_lora` and the Triton kernel) then runs the frozen base's GEMMs in FP8
    (`fp8.enable_fp8_base_matmuls`)."""
    if base_matmul not in ("bf16", "fp8"):
        raise NextaiError(f"model.base_matmul must be bf16 or fp8, got '{base_matmul}'")
    if base_matmul == "fp8":
        _check_fp8(model, lean_lora, kernel)
    # fp8 brings its own (half-size) buffer: a bf16 one would only hold memory
    workspace = DequantWorkspace() if kernel == "triton" and base_matmul == "bf16" else None
    dequantize = dequantizer(kernel, workspace)
    lean_bases: set[int] = set()
    if lean_lora:
        for module in model.modules():
            if type(module) is PeftLinear4bit:
                module.__class__ = LeanLoraLinear4bit
                module.nextai_dequantize = dequantize
                module.nextai_dropout = TritonDropout if kernel == "triton" else TorchDropout
                lean_bases.add(id(module.get_base_layer()))
    plain = 0
    if kernel != "bitsandbytes":
        for module in model.modules():
            if type(module) is bnb.nn.Linear4bit and id(module) not in lean_bases:
                module.__class__ = DequantLinear4bit
                module.nextai_dequantize = dequantize
                plain += 1
    if workspace is not None:
        _reserve_largest(model, workspace)
    lora = (f"lean LoRA in {len(lean_bases)} layers (inputs and mask seeds kept, not dropout outputs and masks)"
            if lean_lora else "peft's LoRA layers")
    masks = ", LoRA A and dropout in fused Triton kernels" if lean_bases and kernel == "triton" else ""
    if base_matmul == "fp8":
        from nextai.modules.fp8 import enable_fp8_base_matmuls

        return f"{lora}{masks}; {enable_fp8_base_matmuls(model, 'triton')}"
    if kernel == "bitsandbytes":
        return f"{lora}; bitsandbytes NF4 dequantization"
    return (f"{lora}; {kernel} NF4 dequantization in {len(lean_bases) + plain} layers (bitsandbytes in the "
            f"rest) into one {workspace.nbytes() / 2**20:.0f} MiB buffer{masks}")


def _check_fp8(model, lean_lora: bool, kernel: str) -> None:
    """fp8 needs the lean layers, the Triton kernels and a Hopper GPU under the 4-bit weights (one line if not)."""
    from nextai.modules.fp8 import check_fp8_supported

    if not lean_lora or kernel != "triton":
        raise NextaiError(f"model.base_matmul fp8 needs model.lean_lora true and model.dequant_kernel triton (or auto "
                          f"on CUDA); got lean_lora {str(lean_lora).lower()}, dequant_kernel {kernel}")
    devices = {m.weight.device for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}
    for device in sorted(devices, key=str) or [torch.device("cpu")]:
        check_fp8_supported(device)


def _reserve_largest(model, workspace: DequantWorkspace) -> None:
    """Size the workspace for the largest weight the swapped layers dequantize, on each of their devices."""
    largest: dict[tuple[torch.device, torch.dtype], int] = {}
    for module in model.modules():
        if type(module) in (LeanLoraLinear4bit, DequantLinear4bit):
            base = module.get_base_layer() if isinstance(module, LeanLoraLinear4bit) else module
            if base.weight.device.type != "cuda" or base.weight.quant_state is None:
                continue
            key = (base.weight.device, base.compute_dtype or torch.bfloat16)
            largest[key] = max(largest.get(key, 0), math.prod(base.weight.quant_state.shape))
    for (device, dtype), numel in largest.items():
        workspace.reserve(numel, dtype, device)


def undo_lean(model) -> None:
    """Give every layer `make_lean` changed its library class back (benchmarks reuse one loaded base)."""
    for module in model.modules():
        if type(module) is LeanLoraLinear4bit:
            module.__class__ = PeftLinear4bit
        elif type(module) is DequantLinear4bit:
            module.__class__ = bnb.nn.Linear4bit
        else:
            continue
        for name in ("nextai_dequantize", "nextai_dropout"):  # the dequantizer holds the workspace: let it be freed
            module.__dict__.pop(name, None)
