"""The fused LoRA dropout kernels (`nextai.modules.lora_dropout_triton`, CUDA; run through `device`, skipped on CPU
machines) against torch computing the same formulas with the mask the kernels draw."""

import pytest
import torch

from nextai.modules.lora_dropout_triton import dropped_lora_a, dropped_lora_a_backward, keep_mask

pytestmark = pytest.mark.gpu


def test_the_mask_is_bernoulli_and_fixed_by_its_seed():
    mask = keep_mask((2048, 4096), 0.05, 11, torch.device("cuda"))
    assert abs(mask.float().mean().item() - 0.95) < 0.002
    assert torch.equal(mask, keep_mask((2048, 4096), 0.05, 11, torch.device("cuda")))
    assert (mask != keep_mask((2048, 4096), 0.05, 12, torch.device("cuda"))).float().mean() > 0.05


@pytest.mark.parametrize("shape,rank", [((1000, 8192), 4), ((4096, 28672), 4), ((300, 200), 8), ((128, 512), 64)])
def test_fused_kernels_equal_torch_with_the_same_mask(shape, rank):
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    lora_A = (torch.randn(rank, shape[1], device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
    grad_xa = torch.randn(shape[0], rank, device="cuda", dtype=torch.bfloat16, generator=generator)
    grad_x = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    p, seed = 0.1, 2**40 + 7
    mask = keep_mask(shape, p, seed, x.device)
    dropped = (x * mask).float()

    xa = dropped_lora_a(x, lora_A, p, seed)
    torch.testing.assert_close(xa.float(), dropped @ lora_A.float().t(), rtol=2e-2, atol=2e-2)

    expected_grad_x = grad_x.float() + (grad_xa.float() @ lora_A.float()) * mask
    grad_A = dropped_lora_a_backward(x, lora_A, grad_xa, p, seed, grad_x)
    torch.testing.assert_close(grad_A, grad_xa.float().t() @ dropped, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(grad_x.float(), expected_grad_x, rtol=2e-2, atol=2e-2)
    assert torch.equal(dropped_lora_a_backward(x, lora_A, grad_xa, p, seed, None), grad_A)  # deterministic


def test_recomputed_and_offloaded_layers_draw_the_same_masks_on_cuda(tiny_model_dir):
    from nextai.modules.activations import apply_layer_policies
    from nextai.modules.qlora import QLoRAModule

    module = QLoRAModule(base_model=str(tiny_model_dir), lora_targets="attention_ffn_output", lora_r=8,
                         cutoff_len=256, lora_dropout=0.3, dequant_kernel="triton")
    module.build_model("cuda")
    assert module.model.get_base_model().model.layers[0].mlp.down_proj.nextai_fused_dropout
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(module.model.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    module.train()
    ids = torch.randint(3, 1000, (2, 512), generator=torch.Generator().manual_seed(1)).cuda()
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def step():
        module.model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}

    results = {}
    for policy in ("keep", "recompute", "offload"):
        apply_layer_policies(module.model, [policy] * 2, module._offloader)
        results[policy] = step()
    loss, grads = results["keep"]
    for policy in ("recompute", "offload"):
        assert torch.equal(results[policy][0], loss), policy
        for name, grad in grads.items():
            assert torch.equal(results[policy][1][name], grad), (policy, name)
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert not torch.equal(module(batch).loss.detach(), loss)  # other seeds, other masks
