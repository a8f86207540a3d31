"""Packed (varlen) causal attention kernels on this GPU: error against a reference and time (issue #8).

Candidates for a pack of examples with LLaMA-2-70B's heads (64 query heads, 8 key/value heads, 128 dims):
- `varlen_attn`: torch.nn.attention.varlen.varlen_attn, key/value heads repeated (what nextai ran before);
- `flash_gqa`: torch's flash kernel (`aten._flash_attention_forward`) with the 8 key/value heads as they are;
- `cudnn_gqa` / `cudnn_repeat`: cuDNN's ragged attention (`aten._cudnn_attention_forward`), heads as they are or
  repeated.
Reference: each example alone through SDPA's math kernel in fp32. Reports the largest absolute error of the output
and of the three gradients (bf16 kernels), and forward + backward milliseconds.

    python benchmarks/scripts/packed_attention_check.py OUT_DIR
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HQ, HKV, D = 64, 8, 128
PACKS = {"4 x 1024": [1024] * 4, "1 x 4096": [4096], "uneven": [7, 293, 1200, 1, 2595]}


def reference(q, k, v, lengths, grad):
    outs, start = [], 0
    q, k, v = (t.detach().float().requires_grad_() for t in (q, k, v))
    for n in lengths:
        s = slice(start, start + n)
        qi, ki, vi = (t[s].transpose(0, 1) for t in (q, k, v))  # heads, tokens, dim
        ki, vi = (t.repeat_interleave(HQ // HKV, dim=0) for t in (ki, vi))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            outs.append(F.scaled_dot_product_attention(qi, ki, vi, is_causal=True).transpose(0, 1))
        start += n
    out = torch.cat(outs)
    out.backward(grad.float())
    return out, q.grad, k.grad, v.grad


def varlen_attn(q, k, v, cu, m, scale):
    import inspect

    from torch.nn.attention.varlen import varlen_attn as kernel
    k, v = (t.repeat_interleave(HQ // HKV, dim=1) for t in (k, v))
    # torch 2.11 takes a window, later versions is_causal (as nextai.modules.attention does)
    causal = {"window_size": (-1, 0)} if "window_size" in inspect.signature(kernel).parameters else {"is_causal": True}
    return kernel(q, k, v, cu, cu, m, m, scale=scale, **causal)


def flash_gqa(q, k, v, cu, m, scale):
    return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, m, m, 0.0, True, False, scale=scale)[0]


def cudnn_gqa(q, k, v, cu, m, scale):
    return torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, m, m, True, 0.0, True, False,
                                                   scale=scale)[0]


def cudnn_repeat(q, k, v, cu, m, scale):
    k, v = (t.repeat_interleave(HQ // HKV, dim=1) for t in (k, v))
    return cudnn_gqa(q, k, v, cu, m, scale)


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for pack, lengths in PACKS.items():
        torch.manual_seed(0)
        tokens = sum(lengths)
        q = torch.randn(tokens, HQ, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(tokens, HKV, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(tokens, HKV, D, device="cuda", dtype=torch.bfloat16)
        grad = torch.randn(tokens, HQ, D, device="cuda", dtype=torch.bfloat16)
        cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), device="cuda", dtype=torch.int32)
        m = max(lengths)
        ref = reference(q, k, v, lengths, grad)
        for name, fn in [("varlen_attn", varlen_attn), ("flash_gqa", flash_gqa), ("cudnn_gqa", cudnn_gqa),
                         ("cudnn_repeat", cudnn_repeat)]:
            row = {"pack": pack, "kernel": name}
            try:
                leaves = [t.clone().requires_grad_() for t in (q, k, v)]
                out = fn(*leaves, cu, m, D ** -0.5)
                out.backward(grad)
                errors = [(a.float() - b).abs().max().item()
                          for a, b in zip([out, *(t.grad for t in leaves)], ref)]
                row.update(out_err=errors[0], dq_err=errors[1], dk_err=errors[2], dv_err=errors[3])

                def step():
                    o = fn(*leaves, cu, m, D ** -0.5)
                    o.backward(grad)
                for _ in range(3):
                    step()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(20):
                    step()
                torch.cuda.synchronize()
                row["ms_fwd_bwd"] = round((time.perf_counter() - start) / 20 * 1e3, 3)
            except Exception as err:  # noqa: BLE001 - a kernel that refuses the case is a result
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out_dir / "packed-attention-check.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
