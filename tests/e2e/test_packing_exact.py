"""A packed batch gives every example the loss it has alone: attention never crosses an example boundary.

CPU: the real 4-bit tiny model, transformers' position-ids path (SDPA with a block-diagonal mask).
GPU: the same check through torch's varlen kernel (marked gpu; run through `device`).
"""

import pytest
import torch
import torch.nn.functional as F

from nextai.data.packing import PackCollator
from nextai.data.tokenize import tokenize_example
from nextai.modules.qlora import QLoRAModule

RECORDS = [("Add the two numbers.", "17 and 25", "17 + 25 = 42."),
           ("Reverse the letters of the word.", "garden", "nedrag"),
           ("What is the opposite of hot?", "", "The opposite of hot is cold.")]


def examples(tokenizer):
    return [tokenize_example(tokenizer, i, x, o, cutoff_len=256, train_on_inputs=True, add_eos_token=True)
            for i, x, o in RECORDS]


def mean_losses(logits, labels, bounds):
    """Mean next-token loss of each [start, end) span of a single row."""
    shifted = F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], reduction="none", ignore_index=-100)
    kept = labels[0, 1:] != -100
    return [shifted[start:end - 1][kept[start:end - 1]].mean().item() for start, end in bounds]


def packed_vs_alone(module, tokenizer, device, dtype, alone_module=None):
    alone_module = alone_module or module
    exs = examples(tokenizer)
    batch = PackCollator(pack_length=1024)(exs)
    cu = batch["cu_seq_lens_q"].tolist()
    bounds = list(zip(cu[:-1], cu[1:]))
    inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()
              if k not in ("num_tokens", "num_slots", "labels")}
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
        packed = mean_losses(module.model(**inputs, use_cache=False).logits, batch["labels"].to(device), bounds)
        alone = []
        for e in exs:
            ids = torch.tensor([e["input_ids"]], device=device)
            labels = torch.tensor([[-100] + e["labels"][1:]], device=device)
            alone += mean_losses(alone_module.model(input_ids=ids, use_cache=False).logits, labels,
                                 [(0, ids.shape[1])])
    return packed, alone, batch, inputs


def tiny(model_dir, device, packing, seed=0):
    module = QLoRAModule(base_model=str(model_dir), lora_targets="all", lora_r=8, cutoff_len=256, packing=packing)
    module.build_model(device)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking adapter, the same in every module built here
        for name, p in sorted(module.model.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return module.eval()


@pytest.fixture(scope="module")
def tiny_module(tiny_model_dir):
    return tiny(tiny_model_dir, "cpu", packing=True)


def test_packed_losses_equal_one_by_one_on_cpu(tiny_module, tiny_tokenizer):
    packed, alone, _, _ = packed_vs_alone(tiny_module, tiny_tokenizer, torch.device("cpu"), torch.bfloat16)
    print("per-example loss, packed vs alone:", [f"{p:.5f}/{a:.5f}" for p, a in zip(packed, alone)])
    for p, a in zip(packed, alone):
        assert p == pytest.approx(a, rel=2e-3)  # stated tolerance: bf16 compute, 2e-3 relative


def test_no_attention_across_examples_on_cpu(tiny_module, tiny_tokenizer):
    _, _, batch, inputs = packed_vs_alone(tiny_module, tiny_tokenizer, torch.device("cpu"), torch.bfloat16)
    cu = batch["cu_seq_lens_q"].tolist()
    changed = dict(inputs)
    changed["input_ids"] = inputs["input_ids"].clone()
    changed["input_ids"][0, 1:cu[1]] = 7  # rewrite the first example
    with torch.no_grad():
        before = tiny_module.model(**inputs, use_cache=False).logits[0, cu[1]:]
        after = tiny_module.model(**changed, use_cache=False).logits[0, cu[1]:]
    assert torch.equal(before, after)  # later examples cannot see it


def packed_losses(module, tokenizer, groups, device):
    """Per-example losses when the examples are packed as `groups` (lists of example positions)."""
    exs = examples(tokenizer)
    losses = {}
    for group in groups:
        batch = PackCollator(pack_length=1024)([exs[i] for i in group])
        cu = batch["cu_seq_lens_q"].tolist()
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()
                  if k not in ("num_tokens", "num_slots", "labels")}
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            logits = module.model(**inputs, use_cache=False).logits
        losses.update(zip(group, mean_losses(logits, batch["labels"].to(device), list(zip(cu[:-1], cu[1:])))))
    return [losses[i] for i in range(len(exs))]


@pytest.mark.gpu
def test_packed_losses_equal_one_by_one_on_gpu(tiny_model_dir, tiny_tokenizer):
    """The varlen kernel on one pack of three vs three packs of one (same kernel: any leak across examples
    shows), and vs SDPA one example at a time (another kernel: bf16 rounding only)."""
    packed_module = tiny(tiny_model_dir, "cuda", packing=True)
    assert packed_module.model.config._attn_implementation in ("nextai_varlen", "flash_attention_2")
    device = torch.device("cuda")
    together = packed_losses(packed_module, tiny_tokenizer, [[0, 1, 2]], device)
    apart = packed_losses(packed_module, tiny_tokenizer, [[0], [1], [2]], device)
    plain_module = tiny(tiny_model_dir, "cuda", packing=False)
    _, sdpa_alone, _, _ = packed_vs_alone(plain_module, tiny_tokenizer, device, torch.bfloat16)
    print("GPU per-example loss, packed / one per pack / sdpa alone:",
          [f"{a:.5f}/{b:.5f}/{c:.5f}" for a, b, c in zip(together, apart, sdpa_alone)])
    for a, b, c in zip(together, apart, sdpa_alone):
        assert a == pytest.approx(b, rel=1e-3)  # same kernel, same example: only bf16 tiling differences
        assert a == pytest.approx(c, rel=5e-3)  # another kernel (SDPA) on the unpacked example


def summed_loss_grads(module, tokenizer, groups, device):
    """Gradients of the LoRA weights for the summed token losses of all examples, packed as `groups`."""
    exs = examples(tokenizer)
    module.model.zero_grad(set_to_none=True)
    for group in groups:
        batch = PackCollator(pack_length=1024)([exs[i] for i in group])
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()
                  if k not in ("num_tokens", "num_slots", "labels")}
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = module.model(**inputs, use_cache=False).logits
        labels = batch["labels"].to(device)
        F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], reduction="sum", ignore_index=-100).backward()
    return {n: p.grad.float().clone() for n, p in module.model.named_parameters() if p.grad is not None}


@pytest.mark.gpu
def test_packed_gradients_equal_one_by_one_on_gpu(tiny_model_dir, tiny_tokenizer):
    """The backward pass of the varlen kernel (grouped key/value heads, as LLaMA-2-70B has) keeps examples apart
    too: one pack of three and three packs of one give the same LoRA gradients, to bf16 rounding: within 1 % of
    each gradient's largest value (a sum's rounding error sits on its small entries as much as on its large ones;
    attention across examples would change them by their own size)."""
    module = tiny(tiny_model_dir, "cuda", packing=True)  # eval mode: no LoRA dropout, gradients still flow
    assert module.model.config.num_key_value_heads < module.model.config.num_attention_heads
    device = torch.device("cuda")
    together = summed_loss_grads(module, tiny_tokenizer, [[0, 1, 2]], device)
    apart = summed_loss_grads(module, tiny_tokenizer, [[0], [1], [2]], device)
    assert together.keys() == apart.keys() and len(together) > 0
    for name, grad in together.items():
        error, scale = (grad - apart[name]).abs().max().item(), apart[name].abs().max().item()
        assert error <= 1e-2 * scale, f"{name}: differs by {error:.3g}, largest value {scale:.3g}"
