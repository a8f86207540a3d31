"""`nextai export`: the LoRA weights merged into a bf16 base with peft's merge, loadable without peft; a checkpoint as
a PEFT adapter; the run's prompt format and a model card in every export."""

import json
from pathlib import Path

import pytest
import torch

from nextai.main import main

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
IDS = torch.tensor([[1, 407, 331, 365, 349, 331, 406, 755]])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export-run")
    main(["fit", "--config", TINY, "--trainer.default_root_dir", str(run), "--trainer.max_steps", "6"])
    return run


def export(run: Path, *extra: str) -> None:
    main(["export", "--config", TINY, "--trainer.default_root_dir", str(run), *extra])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits.float()


def test_merged_model_loads_without_peft_and_computes_base_plus_adapter(run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from nextai.base_model import resolve_base_model

    export(run)
    merged_dir = run / "merged"
    config = json.loads((merged_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.bfloat16)
    assert not any("lora" in name for name, _ in merged.named_parameters())

    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("tiny"), dtype=torch.bfloat16)
    unmerged = PeftModel.from_pretrained(base, str(run / "adapter"))
    expected = logits(unmerged)
    with unmerged.disable_adapter():
        without_adapter = logits(unmerged)
    error = (logits(merged) - expected).abs().max().item()
    effect = (without_adapter - expected).abs().max().item()
    print(f"max |merged - base+adapter| = {error:.4f}, adapter effect {effect:.4f}")
    assert error < 0.05 and effect > 5 * error  # equal up to bf16 rounding; the adapter itself matters more


def test_checkpoint_and_adapter_give_the_same_merge(run):
    from safetensors.torch import load_file

    export(run, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--output_dir", str(run / "from-ckpt"))
    from_adapter, from_checkpoint = (load_file(run / d / "model.safetensors") for d in ("merged", "from-ckpt"))
    assert from_adapter.keys() == from_checkpoint.keys()
    assert all(torch.equal(from_adapter[k], from_checkpoint[k]) for k in from_adapter)


def test_dequantized_merge_matches_the_trained_4bit_model(run):
    from transformers import AutoModelForCausalLM

    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization

    export(run, "--base_weights", "dequantized", "--output_dir", str(run / "dequantized"))
    trained = logits(load_for_inference("tiny", run / "adapter", Quantization(), "sdpa", "cpu"))
    dequantized = logits(AutoModelForCausalLM.from_pretrained(run / "dequantized", dtype=torch.bfloat16))
    original = logits(AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.bfloat16))
    # Merged into the NF4 weights it was trained on, the adapter computes what it computed in training; merged into
    # the original bf16 weights, it carries the quantization error of the base as well.
    assert (dequantized - trained).abs().max() < 0.05
    assert (original - trained).abs().max() > 2 * (dequantized - trained).abs().max()


def test_export_needs_weights_to_merge(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(tmp_path, "--adapter", "base")
    assert exit_info.value.code == 2
    assert "nothing to merge" in capsys.readouterr().err


def test_a_checkpoint_becomes_a_peft_adapter_without_merging(run):
    """`--format adapter --ckpt_path`: any checkpoint as a PEFT adapter (the last one: the run's own adapter)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from nextai.base_model import resolve_base_model

    export(run, "--format", "adapter", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    exported = run / "adapter-last"
    own, made = (load_file(d / "adapter_model.safetensors") for d in (run / "adapter", exported))
    assert own.keys() == made.keys() and all(torch.equal(own[k], made[k]) for k in own)
    settings = ("r", "lora_alpha", "lora_dropout", "target_modules", "task_type")
    own_config, made_config = (json.loads((d / "adapter_config.json").read_text()) for d in (run / "adapter", exported))
    assert {k: own_config[k] for k in settings if k != "target_modules"} == \
        {k: made_config[k] for k in settings if k != "target_modules"}
    assert sorted(own_config["target_modules"]) == sorted(made_config["target_modules"])
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("tiny"), dtype=torch.bfloat16)
    loaded = PeftModel.from_pretrained(base, str(exported))  # peft reads it as its own
    assert any("lora_B" in name and parameter.abs().sum() > 0 for name, parameter in loaded.named_parameters())
    assert (exported / "prompt_format.json").read_text() == (run / "prompt_format.json").read_text()


def test_exports_carry_the_training_format_and_a_card(run):
    from transformers import AutoTokenizer

    from nextai.eval.chat_templates import alpaca_chat_template

    export(run)  # merged
    merged = run / "merged"
    assert json.loads((merged / "prompt_format.json").read_text())["formats"] == ["alpaca"]
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.chat_template == alpaca_chat_template()  # apply_chat_template asks as the run trained
    messages = [{"role": "user", "content": "Name a color."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).endswith(
        "### Instruction:\nName a color.\n\n### Response:\n")
    card = (merged / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "[More Information" not in card
    assert "| optimizer steps | 6 |" in card and "| time used |" in card and "| tokens/s (mean, real tokens) |" in card
    assert "records fingerprint: `" in card and "tokenized fingerprint: `" in card


def test_bad_export_format_is_one_line(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(run, "--format", "onnx")
    assert exit_info.value.code == 2
    assert "export: --format must be one of adapter, merged, gguf, got 'onnx'" in capsys.readouterr().err
