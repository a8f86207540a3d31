"""A checkpoint saved already quantized loads in the 4-bit storage dtype asked for (FSDP needs bf16), and computes
exactly what it computes in the storage it was saved with."""

import torch

from nextai.modules.loading import load_causal_lm
from nextai.modules.quantization import Quantization


def four_bit_dtypes(model) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters() if type(p).__name__ == "Params4bit"}


def test_a_prequantized_checkpoint_is_read_in_the_storage_asked_for(prequantized_tiny_dir, caplog):
    saved = load_causal_lm(str(prequantized_tiny_dir), Quantization(), "sdpa", "cpu")
    assert four_bit_dtypes(saved) == {torch.uint8}
    caplog.set_level("INFO")
    restored = load_causal_lm(str(prequantized_tiny_dir), Quantization(bnb_4bit_quant_storage="bfloat16"), "sdpa",
                              "cpu")
    assert four_bit_dtypes(restored) == {torch.bfloat16}
    layers = [m for m in restored.modules() if type(m).__name__ == "Linear4bit"]
    assert layers and all(m.quant_storage == torch.bfloat16 for m in layers)
    assert restored.config.quantization_config.bnb_4bit_quant_storage == torch.bfloat16
    assert "saved in another storage dtype by the checkpoint, read as bfloat16" in caplog.text
    tokens = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(saved(tokens).logits, restored(tokens).logits)


def test_settings_a_prequantized_checkpoint_cannot_take_are_named(prequantized_tiny_dir, caplog):
    caplog.set_level("INFO")
    load_causal_lm(str(prequantized_tiny_dir), Quantization(bnb_4bit_compute_dtype="float16"), "sdpa", "cpu")
    assert ("the checkpoint was saved quantized and loads as it was: model.quantization bnb_4bit_compute_dtype "
            "float16 (the checkpoint's: bfloat16)") in caplog.text
    caplog.clear()
    load_causal_lm(str(prequantized_tiny_dir), Quantization(), "sdpa", "cpu")
    assert "loads as it was" not in caplog.text
