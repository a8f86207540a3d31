"""The Triton NF4 dequantization (`model.dequant_kernel: triton`) on CUDA (run through `device`; skipped on CPU
machines): bit for bit what bitsandbytes computes, and a training step through it and the lean LoRA layers that
agrees with peft + bitsandbytes."""

import pytest
import torch

from nextai.modules.nf4_dequant import (DequantWorkspace, bitsandbytes_dequantize, dequantizer, triton_dequantize_nf4,
                                        triton_supported)

from tiny_lora import build_tiny_lora

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("shape", [(1024, 8192), (8192, 1024), (999, 777), (3, 64)])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("blocksize", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_dequantization_equals_bitsandbytes_bit_for_bit(shape, nested, blocksize, dtype):
    import bitsandbytes.functional as F

    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0)).mul_(0.02).to("cuda", torch.bfloat16)
    weight[0, :3] = torch.tensor([0.0, 5.0, -5.0])  # a zero and a block with an outlier
    packed, state = F.quantize_4bit(weight, blocksize=blocksize, compress_statistics=nested, quant_type="nf4")
    assert triton_supported(packed, state, dtype)
    ours = triton_dequantize_nf4(packed, state, dtype)
    reference = bitsandbytes_dequantize(packed, state, dtype)
    assert ours.shape == reference.shape == shape and ours.dtype == dtype
    mismatched = (ours != reference).sum().item()
    assert mismatched == 0, f"{mismatched} of {ours.numel()} values differ; max {(ours - reference).abs().max()}"


def test_the_workspace_takes_every_weight_without_allocating():
    import bitsandbytes.functional as F

    generator = torch.Generator().manual_seed(3)
    weights = [F.quantize_4bit((torch.randn(shape, generator=generator) * 0.02).to("cuda", torch.bfloat16),
                               blocksize=64, compress_statistics=True, quant_type="nf4")
               for shape in [(1024, 512), (512, 2048), (64, 64)]]
    workspace = DequantWorkspace()
    workspace.reserve(512 * 2048, torch.bfloat16, torch.device("cuda"))
    dequantize = dequantizer("triton", workspace)
    before = torch.cuda.memory_allocated()
    pointers = {dequantize(packed, state, torch.bfloat16).data_ptr() for packed, state in weights}
    assert torch.cuda.memory_allocated() == before and len(pointers) == 1  # one buffer, nothing allocated
    for packed, state in weights:
        assert torch.equal(dequantize(packed, state, torch.bfloat16),
                           bitsandbytes_dequantize(packed, state, torch.bfloat16))


def build(model_dir, **options):
    return build_tiny_lora(model_dir, "cuda", lora_targets="attention_ffn_output", lora_dropout=0.0, **options)


def step(module, batch):
    module.model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module(batch).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float().clone() for n, p in module.model.named_parameters()
                                   if p.requires_grad}


def test_lean_triton_step_agrees_with_peft_and_bitsandbytes(tiny_model_dir):
    ids = torch.randint(3, 1000, (2, 512), generator=torch.Generator().manual_seed(1)).cuda()
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    peft_loss, peft_grads = step(build(tiny_model_dir, lean_lora=False), batch)
    lean = build(tiny_model_dir, lean_lora=True, dequant_kernel="triton")
    layer = lean.model.get_base_model().model.layers[0]
    assert type(layer.mlp.down_proj).__name__ == "LeanLoraLinear4bit"
    assert type(layer.self_attn.q_proj).__name__ == "DequantLinear4bit"
    lean_loss, lean_grads = step(lean, batch)
    torch.testing.assert_close(lean_loss, peft_loss, rtol=1e-3, atol=1e-3)
    for name, grad in peft_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=3e-2, atol=2e-3, msg=name)
    print(f"lean + triton loss {lean_loss.item():.5f}, peft + bitsandbytes {peft_loss.item():.5f}")
