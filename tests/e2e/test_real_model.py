"""A real pretrained model end to end on the CPU: SmolLM2-135M-Instruct from its GGUF file (dequantized once,
quantized to NF4 like any base), LoRA on the bundled conversations rendered through its own ChatML template. The
validation loss falls below the base model's, and the adapter loads in plain peft on the plain base."""

import csv
import json
from pathlib import Path

import pytest
import torch

from nextai.main import main

pytestmark = pytest.mark.slow
SMOL = str(Path(__file__).resolve().parents[2] / "configs" / "smol.yaml")


def val_losses(path: Path) -> list[float]:
    with open(path) as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]


def test_smollm2_learns_the_bundled_conversations(tmp_path, smollm2_gguf, smollm2_dir):
    run = tmp_path / "smol"
    common = ["--config", SMOL, "--model.base_model", str(smollm2_gguf), "--trainer.default_root_dir", str(run)]
    main(["validate", *common])  # before any training: LoRA's B is zero, so this is the base model's loss
    base = val_losses(run / "validate" / "metrics.csv")[-1]
    main(["fit", *common, "--trainer.max_steps", "4", "--trainer.val_check_interval", "4"])
    tuned = val_losses(run / "metrics.csv")[-1]
    assert tuned < base, (base, tuned)

    recorded = json.loads((run / "adapter" / "prompt_format.json").read_text())
    assert recorded["formats"] == ["messages"] and recorded["chat_template"]["end_of_turn"] == "<|im_end|>"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 9690, 198, 19556, 905, 2]])
    plain = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    with torch.no_grad():
        before = plain(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(plain, str(run / "adapter"))
        after = adapted(input_ids=ids).logits
    assert after.shape == before.shape and not torch.allclose(after, before)  # the adapter changes the model
