"""Which attention kernel runs, and torch's own varlen kernel for packed batches.

Padded batches: flash-attn 2 when it imports and a GPU is present, else torch's SDPA.
Packed batches (several examples in one row, see `nextai.data.packing`), never attending across examples:
- CUDA: flash-attn's varlen path when installed, else `torch.nn.attention.varlen.varlen_attn` (PyTorch's own flash
  kernel, no extra package), both driven by the `cu_seq_lens_*` the pack collator provides;
- CPU: transformers' position-ids path (no attention mask, no cache): SDPA with a block-diagonal causal mask.
"""

import functools
import importlib.util
import inspect
import logging
from typing import Literal, get_args

import torch

from nextai.errors import NextaiError, first_line

log = logging.getLogger(__name__)

AttentionChoice = Literal["auto", "flash_attention_2", "sdpa", "eager"]
ATTENTION_CHOICES: tuple[str, ...] = get_args(AttentionChoice)
VARLEN = "nextai_varlen"  # registered with transformers' AttentionInterface under this name
PACKED_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


@functools.cache
def flash_attn_unusable() -> str | None:
    """Why flash-attn cannot be used, or None when it imports. An install built for another torch or CUDA (an ABI
    mismatch) is found by the import system yet fails to import: it is then not chosen, and the reason logged once."""
    if importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed"
    try:
        from flash_attn import flash_attn_varlen_func  # noqa: F401  (what transformers calls; loads the CUDA build)
    except Exception as err:  # ImportError, OSError (undefined symbol), whatever a broken build raises at import
        reason = f"flash-attn is installed but does not import ({type(err).__name__}: {first_line(err)})"
        log.warning("%s; torch's attention is used instead", reason)
        return reason
    return None


def flash_attn_available() -> bool:
    return flash_attn_unusable() is None


def torch_varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def choose_attention(requested: AttentionChoice, device_type: str, packed: bool = False) -> tuple[str, str]:
    """The transformers `attn_implementation` to load with, and why (for the log)."""
    if requested not in ATTENTION_CHOICES:
        raise NextaiError(f"model.attn_implementation: unknown value '{requested}'; "
                          f"expected one of {', '.join(ATTENTION_CHOICES)}")
    if requested == "flash_attention_2":
        if device_type != "cuda":
            raise NextaiError("model.attn_implementation=flash_attention_2 needs a CUDA GPU; "
                              "this run is on the CPU: use sdpa or auto")
        if not flash_attn_available():
            raise NextaiError(f"model.attn_implementation=flash_attention_2 needs flash-attn: {flash_attn_unusable()} "
                              "(pip install 'nextai[flash]'); or use sdpa / auto")
    if packed:
        return _choose_packed(requested, device_type)
    if requested == "auto":
        if device_type == "cuda" and flash_attn_available():
            return "flash_attention_2", "auto: flash-attn imports and a CUDA GPU is present"
        why = "no CUDA device" if device_type != "cuda" else flash_attn_unusable()
        return "sdpa", f"auto: {why}, so torch's scaled_dot_product_attention"
    return requested, "requested"


def _choose_packed(requested: str, device_type: str) -> tuple[str, str]:
    if device_type != "cuda":
        implementation = "eager" if requested == "eager" else "sdpa"
        return implementation, (f"packed batches on {device_type}: {implementation} with positions restarting per "
                                "example, which transformers turns into a block-diagonal causal mask (no cache)")
    if requested in ("auto", "flash_attention_2") and flash_attn_available():
        return "flash_attention_2", "packed batches: flash-attn varlen kernel driven by cu_seq_lens"
    if requested == "eager":
        return "eager", ("packed batches: eager attention with a block-diagonal mask built from the positions "
                         "(slow, memory grows with the square of the pack)")
    if torch_varlen_available():
        register_varlen_attention()
        return VARLEN, ("packed batches: torch.nn.attention.varlen.varlen_attn (PyTorch's flash kernel) driven "
                        f"by cu_seq_lens; {flash_attn_unusable()}")
    return "sdpa", ("packed batches: this torch has no varlen_attn; SDPA with a block-diagonal mask built from the "
                    "positions (memory grows with the square of the pack)")


_VARLEN_PARAMETERS: frozenset[str] = frozenset()


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal attention inside each packed example.

    query: [1, Hq, T, D], key/value: [1, Hkv, T, D] -> [1, T, Hq, D]. Needs `cu_seq_lens_q` and `max_length_q`
    (passed by `QLoRAModule.forward` from the pack collator).
    """
    from torch.nn.attention.varlen import varlen_attn

    if kwargs.get("cu_seq_lens_q") is None:
        raise RuntimeError(f"{VARLEN} attention runs packed batches only (no cu_seq_lens_q in this call)")
    if dropout:
        raise RuntimeError(f"{VARLEN} attention has no attention dropout (got {dropout})")
    cu_seq_lens, max_length = kwargs["cu_seq_lens_q"], int(kwargs["max_length_q"])
    batch, q_heads, tokens, head_dim = query.shape
    kv_heads = key.shape[1]
    dtype = query.dtype if query.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q = query.transpose(1, 2).reshape(batch * tokens, q_heads, head_dim).to(dtype)
    k = key.transpose(1, 2).reshape(batch * tokens, kv_heads, head_dim).to(dtype)
    v = value.transpose(1, 2).reshape(batch * tokens, kv_heads, head_dim).to(dtype)
    options = {"scale": scaling}
    if "window_size" in _VARLEN_PARAMETERS:
        options["window_size"] = (-1, 0)  # causal
    else:
        options["is_causal"] = True
    if kv_heads != q_heads and "enable_gqa" not in _VARLEN_PARAMETERS:
        # torch 2.11's varlen_attn refuses grouped key/value heads; the flash kernel it calls takes them as they are
        # (repeating them instead cost two copies and a reduction per layer: about 1 % of a 70B step)
        out = torch.ops.aten._flash_attention_forward(q, k, v, cu_seq_lens, cu_seq_lens, max_length, max_length, 0.0,
                                                      True, False, scale=scaling)[0]
    else:
        if kv_heads != q_heads:
            options["enable_gqa"] = True
        out = varlen_attn(q, k, v, cu_seq_lens, cu_seq_lens, max_length, max_length, **options)
    return out.view(batch, tokens, q_heads, head_dim).to(query.dtype), None


def register_varlen_attention() -> None:
    global _VARLEN_PARAMETERS
    from torch.nn.attention.varlen import varlen_attn
    from transformers import AttentionInterface

    _VARLEN_PARAMETERS = frozenset(inspect.signature(varlen_attn).parameters)
    AttentionInterface.register(VARLEN, varlen_attention_forward)
