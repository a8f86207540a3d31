"""Trainable parameters per LoRA preset: on the real 4-bit tiny model and on the LLaMA-2-70B shape (meta device).

The expected counts are computed from the layer shapes (r x (in + out) per adapted linear), independently of peft;
the report's final table gives 17M (0.0247 %) for `attention_ffn_output` at r=4 on LLaMA-2-70B.
"""

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from nextai.modules.lora import LORA_PRESETS, lora_config
from nextai.modules.qlora import QLoRAModule, count_parameters

LLAMA2_70B = dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                  num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=4096)


def linear_shapes(hidden, ffn, heads, kv_heads):
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    return {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden),
            "gate_proj": (hidden, ffn), "up_proj": (hidden, ffn), "down_proj": (ffn, hidden)}


def expected_lora(preset, r, layers, shapes):
    return layers * sum(r * (shapes[name][0] + shapes[name][1]) for name in LORA_PRESETS[preset])


@pytest.fixture(scope="module")
def llama70b_meta():
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**LLAMA2_70B))


@pytest.mark.parametrize("preset", list(LORA_PRESETS))
def test_70b_shape_counts(llama70b_meta, preset):
    import copy

    model = get_peft_model(copy.deepcopy(llama70b_meta), lora_config(4, 16, 0.05, preset))
    trainable, total = count_parameters(model)
    shapes = linear_shapes(8192, 28672, 64, 8)
    assert trainable == expected_lora(preset, 4, 80, shapes)
    assert total - trainable == 68_976_648_192  # LLaMA-2-70B


def test_70b_final_recipe_matches_the_report(llama70b_meta):
    import copy

    model = get_peft_model(copy.deepcopy(llama70b_meta), lora_config(4, 16, 0.05, "attention_ffn_output"))
    trainable, total = count_parameters(model)
    assert trainable == 17_039_360  # "17M"
    assert round(100 * trainable / total, 4) == 0.0247  # "0.0247 %"


@pytest.mark.parametrize("preset", list(LORA_PRESETS))
def test_tiny_4bit_counts(tiny_model_dir, preset):
    from nextai.tiny import TINY_SHAPE

    module = QLoRAModule(base_model=str(tiny_model_dir), lora_r=8, lora_targets=preset, cutoff_len=256)
    module.build_model("cpu")
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in module.model.modules())  # the real 4-bit path
    trainable, total = count_parameters(module.model)
    shapes = linear_shapes(TINY_SHAPE["hidden_size"], TINY_SHAPE["intermediate_size"],
                           TINY_SHAPE["num_attention_heads"], TINY_SHAPE["num_key_value_heads"])
    assert trainable == expected_lora(preset, 8, TINY_SHAPE["num_hidden_layers"], shapes)
    assert trainable == sum(p.numel() for p in module.parameters() if p.requires_grad)
