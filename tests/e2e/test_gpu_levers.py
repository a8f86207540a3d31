"""The memory and speed levers on CUDA (run through `device`; skipped on CPU machines): offloaded activations,
Liger kernels and the fused loss change memory and speed, never the loss or the gradients (bf16 tolerances)."""

import pytest
import torch

from nextai.modules.activations import apply_layer_policies
from nextai.modules.memory_plan import measure_layer, plan_layers

from tiny_lora import build_tiny_lora

pytestmark = pytest.mark.gpu


def build(model_dir, **options):
    return build_tiny_lora(model_dir, "cuda", **options)


def step(module, batch):
    module.model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module(batch).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float().clone() for n, p in module.model.named_parameters()
                                   if p.requires_grad}


@pytest.fixture(scope="module")
def batch():
    ids = torch.randint(3, 1000, (2, 2048), generator=torch.Generator().manual_seed(1)).cuda()
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def test_offload_recompute_keep_agree_on_cuda(tiny_model_dir, batch):
    module = build(tiny_model_dir, lora_dropout=0.0)
    results = {}
    for policy in ("keep", "recompute", "offload"):
        apply_layer_policies(module.model, [policy] * 2, module._offloader)
        results[policy] = step(module, batch)
        results[policy + " again"] = step(module, batch)  # second step reuses the pinned buffers
    loss, grads = results["keep"]
    for policy, (other_loss, other_grads) in results.items():
        torch.testing.assert_close(other_loss, loss, rtol=1e-3, atol=1e-3)
        for name, grad in grads.items():
            torch.testing.assert_close(other_grads[name], grad, rtol=2e-2, atol=2e-3, msg=f"{policy} {name}")


@pytest.fixture
def restore_llama_module():
    """Liger patches transformers' llama module globally (RoPE function, RMSNorm and MLP classes): undo it so later
    tests in this process run the stock code."""
    from transformers.models.llama import modeling_llama

    saved = {name: getattr(modeling_llama, name) for name in ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP")}
    yield
    for name, value in saved.items():
        setattr(modeling_llama, name, value)


def test_liger_kernels_and_fused_loss_agree_on_cuda(tiny_model_dir, batch, restore_llama_module):
    plain_loss, plain_grads = step(build(tiny_model_dir, lora_dropout=0.0), batch)
    fast_loss, fast_grads = step(build(tiny_model_dir, lora_dropout=0.0, kbit_preparation=False,
                                       fused_cross_entropy=True, liger_kernels=True), batch)
    print(f"loss plain {plain_loss.item():.5f} fused+liger {fast_loss.item():.5f}")
    torch.testing.assert_close(fast_loss, plain_loss, rtol=5e-3, atol=5e-3)
    for name, grad in plain_grads.items():
        cosine = torch.nn.functional.cosine_similarity(fast_grads[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, name


def test_memory_plan_on_cuda(tiny_model_dir):
    module = build(tiny_model_dir, packing=True)
    cost = measure_layer(module.model, 2048, packed=True)
    assert cost.input_bytes == 2048 * 256 * 2
    assert cost.keep_bytes > cost.input_bytes
    plan = plan_layers(2, torch.cuda.mem_get_info()[0], torch.cuda.memory_allocated(), cost)
    assert plan.policies == ["keep", "keep"]
    budgeted = build(tiny_model_dir, packing=True, micro_batch_tokens=2048, memory_budget="card")
    assert budgeted.memory_plan is not None and budgeted.memory_plan.policies == ["keep", "keep"]


def test_a_memory_budget_caps_what_torch_may_reserve(tiny_model_dir):
    """With `memory_budget: 4GiB` the card behaves as a 4 GiB one: 1 GiB more fits, 5 GiB do not."""
    try:
        build(tiny_model_dir, packing=True, micro_batch_tokens=2048, memory_budget="4GiB")
        torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(5 << 30, dtype=torch.uint8, device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
