"""The lean 4-bit LoRA layers (`model.lean_lora`) compute peft's function with less kept for the backward pass,
on real bitsandbytes 4-bit layers (CPU)."""

import bitsandbytes as bnb
import pytest
import torch

from nextai.modules.activations import apply_layer_policies
from nextai.modules.lean_lora import FrozenNF4Function, LoRANF4Function
from nextai.modules.lora_dropout import keep_mask
from nextai.modules.nf4_dequant import bitsandbytes_dequantize
from nextai.modules.qlora import QLoRAModule
from nextai.modules.quantization import Quantization

from tiny_lora import set_lora_weights


@pytest.fixture(scope="module")
def linear():
    """A real bitsandbytes NF4 layer (double quantization), quantized when moved to its device, computing in fp32."""
    torch.manual_seed(0)
    return bnb.nn.Linear4bit(64, 48, bias=False, compute_dtype=torch.float32, compress_statistics=True,
                             quant_type="nf4").to("cpu")


@pytest.mark.parametrize("p", [0.0, 0.1])
def test_lora_function_equals_the_autograd_reference(linear, p):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(10, 64, generator=generator, requires_grad=True)
    lora_A = (torch.randn(4, 64, generator=generator) * 0.1).requires_grad_()
    lora_B = (torch.randn(48, 4, generator=generator) * 0.1).requires_grad_()
    grad_out = torch.randn(10, 48, generator=generator)
    packed, state = linear.weight, linear.weight.quant_state
    scaling, seed = 4.0, 1234

    out = LoRANF4Function.apply(x, lora_A, lora_B, packed, state, bitsandbytes_dequantize, scaling, p, seed)
    out.backward(grad_out)
    lean = out.detach(), x.grad.clone(), lora_A.grad.clone(), lora_B.grad.clone()
    for t in (x, lora_A, lora_B):
        t.grad = None

    weight = bitsandbytes_dequantize(packed, state, torch.float32)
    mask = keep_mask(x.shape, p, seed, x.device, x.dtype) if p else torch.ones_like(x)
    reference = x @ weight.t() + scaling * (x * mask / (1 - p)) @ lora_A.t() @ lora_B.t()
    reference.backward(grad_out)
    expected = reference.detach(), x.grad, lora_A.grad, lora_B.grad
    for name, got, want in zip(("output", "x grad", "A grad", "B grad"), lean, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)


def test_frozen_function_matches_bitsandbytes_matmul(linear):
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    grad_out = torch.randn(6, 48, generator=torch.Generator().manual_seed(3))
    out = FrozenNF4Function.apply(x, linear.weight, linear.weight.quant_state, bitsandbytes_dequantize)
    out.backward(grad_out)
    ours = out.detach(), x.grad.clone()
    x.grad = None
    reference = linear(x)
    reference.backward(grad_out)
    torch.testing.assert_close(ours[0], reference.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], x.grad, rtol=1e-5, atol=1e-5)


def test_the_mask_is_bernoulli_and_fixed_by_its_seed():
    shape = (1000, 1000)
    mask = keep_mask(shape, 0.05, 7, torch.device("cpu"), torch.bfloat16)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(mask.float().mean().item() - 0.95) < 0.002
    assert torch.equal(mask, keep_mask(shape, 0.05, 7, torch.device("cpu"), torch.bfloat16))
    assert not torch.equal(mask, keep_mask(shape, 0.05, 8, torch.device("cpu"), torch.bfloat16))


def build(model_dir, lean, dropout, targets="all", compute="float32"):
    """The tiny model with LoRA weights set from a fixed seed; in fp32 through and through (peft's preparation
    upcasts the embeddings and norms) or in bf16."""
    module = QLoRAModule(base_model=str(model_dir), lora_targets=targets, lora_r=8, cutoff_len=256,
                         lora_dropout=dropout, lean_lora=lean, kbit_preparation=compute == "float32",
                         quantization=Quantization(bnb_4bit_compute_dtype=compute))
    module.build_model("cpu")
    if compute == "float32":
        # bitsandbytes' backward dequantizes to the dtype the weights were quantized from (bf16 here), its forward
        # to the compute dtype: make both fp32 so that peft's path is a float32 reference.
        for layer in module.model.modules():
            if isinstance(layer, bnb.nn.Linear4bit):
                layer.weight.quant_state.dtype = torch.float32
    set_lora_weights(module.model)
    return module.train()


@pytest.fixture(scope="module")
def batch():
    ids = torch.randint(3, 1000, (2, 48), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def step(module, batch):
    module.model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    loss = module(batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}


def test_lean_layers_compute_what_peft_computes(tiny_model_dir, batch):
    """Without dropout (peft's masks come from another generator) and in fp32, loss and every LoRA gradient of
    the tiny model agree with peft's layers to float rounding."""
    peft_loss, peft_grads = step(build(tiny_model_dir, lean=False, dropout=0.0), batch)
    lean_module = build(tiny_model_dir, lean=True, dropout=0.0)
    assert type(lean_module.model.get_base_model().model.layers[0].mlp.down_proj).__name__ == "LeanLoraLinear4bit"
    lean_loss, lean_grads = step(lean_module, batch)
    torch.testing.assert_close(lean_loss, peft_loss, rtol=1e-5, atol=1e-5)
    assert peft_grads.keys() == lean_grads.keys() and len(peft_grads) == 2 * 7 * 2
    for name, grad in peft_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_recomputation_draws_the_same_dropout_masks(tiny_model_dir, batch):
    module = build(tiny_model_dir, lean=True, dropout=0.3, compute="bfloat16")
    results = {}
    for policy in ("keep", "recompute", "offload"):
        apply_layer_policies(module.model, [policy] * 2, module._offloader)
        results[policy] = step(module, batch)
    loss, grads = results["keep"]
    for policy in ("recompute", "offload"):
        assert torch.equal(results[policy][0], loss)
        for name, grad in grads.items():
            assert torch.equal(results[policy][1][name], grad), (policy, name)
    torch.manual_seed(1)  # another seed, other masks: the dropout is live
    assert not torch.equal(module(batch).loss.detach(), loss)


def saved_bytes(module, batch) -> int:
    """Bytes of distinct storages autograd keeps from one forward pass."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(batch).loss
    return sum(storages.values())


def test_lean_layers_keep_neither_dropout_outputs_nor_masks(tiny_model_dir, batch):
    """The report's preset (o_proj, down_proj) with dropout, bf16: peft keeps a bool mask and a bf16 dropout output
    per adapted projection; the lean layers keep their input, which attention already keeps for o_proj."""
    peft = build(tiny_model_dir, lean=False, dropout=0.05, targets="attention_ffn_output", compute="bfloat16")
    lean = build(tiny_model_dir, lean=True, dropout=0.05, targets="attention_ffn_output", compute="bfloat16")
    config = peft.model.get_base_model().config
    tokens = batch["input_ids"].numel()
    o_proj, down_proj = tokens * config.hidden_size, tokens * config.intermediate_size  # inputs, in elements
    for module in (peft, lean):
        apply_layer_policies(module.model, ["keep"] * config.num_hidden_layers)
    saved_by_peft, saved_by_lean = saved_bytes(peft, batch), saved_bytes(lean, batch)
    per_layer = (o_proj * (1 + 2) + down_proj * 1)  # masks and o_proj's dropout output; down_proj's input stays
    assert saved_by_peft - saved_by_lean >= config.num_hidden_layers * per_layer, (saved_by_peft, saved_by_lean)


def test_undo_lean_gives_the_library_classes_back_and_drops_the_kernels(tiny_model_dir, batch):
    """`nextai bench` reuses one loaded base across recipes: after `undo_lean` peft's own layers run again, and no
    layer keeps the dequantizer or dropout kernels (on CUDA they hold the shared workspace)."""
    from peft.tuners.lora.bnb import Linear4bit as PeftLinear4bit

    from nextai.modules.lean_lora import LeanLoraLinear4bit, undo_lean

    module = build(tiny_model_dir, lean=True, dropout=0.0)
    lean_loss = step(module, batch)[0]
    layers = [m for m in module.model.modules() if isinstance(m, PeftLinear4bit)]
    assert layers and all(type(m) is LeanLoraLinear4bit for m in layers)
    undo_lean(module.model)
    assert all(type(m) is PeftLinear4bit for m in layers)
    assert not any("nextai_dequantize" in m.__dict__ or "nextai_dropout" in m.__dict__ for m in layers)
    torch.testing.assert_close(step(module, batch)[0], lean_loss, rtol=1e-5, atol=1e-5)  # peft's path, same loss
