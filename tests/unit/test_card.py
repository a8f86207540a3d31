"""The model card: every number read from the run's files, in the Hub's card format; nothing invented for what a run
did not record."""

import json

import pytest
import yaml

from nextai.eval.card import build_card, hub_id, is_nextai_card, read_run, write_card

CONFIG = {
    "seed_everything": 42,
    "trainer": {"max_steps": 40, "precision": "bf16-mixed"},
    "model": {"base_model": "meta-llama/Llama-2-7b-hf", "lora_r": 4, "lora_alpha": 16, "lora_dropout": 0.05,
              "lora_targets": "attention_ffn_output", "optimizer": "paged_adamw_8bit", "learning_rate": 0.0003,
              "quantization": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                               "bnb_4bit_compute_dtype": "bfloat16"}},
    "data": {"source": "bundled:chat/messages.jsonl", "batch_size": 4, "cutoff_len": 1024},
    "budget": {"limit": "2h"},
}
METRICS = ("step,train_loss,train/tokens_per_sec,val_loss\n"
           "5,2.0,100.0,\n10,1.5,300.0,\n10,,,1.25\n20,1.0,,\n20,,,0.875\n")


@pytest.fixture
def run(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "run.json").write_text(json.dumps({"state": "stopped", "step": 20, "reason": "budget: 3m left",
                                                   "started": "2026-12-06T10:00:00",
                                                   "updated": "2026-12-06T11:30:00", "checkpoint": None}))
    (tmp_path / "metrics.csv").write_text(METRICS)
    (tmp_path / "peak_memory.json").write_text(json.dumps({
        "device": "cuda:0", "device_name": "NVIDIA H100", "measure": "torch.cuda max_memory_allocated",
        "run_peak": {"allocated_gib": 35.25, "reserved_gib": 36.5}}))
    (tmp_path / "evaluation.md").write_text("# Evaluation: run\n\nModel: x\n\n| MMLU | BBQ |\n|---|---|\n"
                                            "| 0.412 | 0.550 |\n\n## MMLU\n\n| Run | x |\n")
    (tmp_path / "prompt_format.json").write_text(json.dumps({"formats": ["messages"], "chat_template": {
        "name": "chatml", "source": "{{ x }}", "end_of_turn": "<|im_end|>"}}))
    return tmp_path


def test_the_card_reports_what_the_run_recorded(run):
    from huggingface_hub import ModelCard

    data = {"source": "chat (bundled:chat/messages.jsonl, train)", "records_fingerprint": "abc123",
            "tokenized_fingerprint": "def456"}
    card = build_card("adapter", run, "meta-llama/Llama-2-7b-hf", str(run / "adapter"), data)
    reloaded = ModelCard(str(card))  # the Hub's parser reads it back
    assert reloaded.data.base_model == "meta-llama/Llama-2-7b-hf" and reloaded.data.library_name == "peft"
    assert "nextai" in reloaded.data.tags and reloaded.data.pipeline_tag == "text-generation"
    text = reloaded.text
    assert "| time used | 1h30m00s of a 2h00m00s budget (75.0%) |" in text  # run.json's clock (no checkpoint)
    assert "| tokens/s (mean, real tokens) | 200.0 |" in text  # the mean of the logged windows
    assert "| validation loss | 0.8750 |" in text and "| last training loss | 1.0000 |" in text
    assert "| state | stopped (budget: 3m left) |" in text and "| optimizer steps | 20 |" in text
    assert "allocated 35.25 GiB, reserved 36.50 GiB (NVIDIA H100" in text
    assert "| MMLU | BBQ |\n|---|---|\n| 0.412 | 0.550 |" in text and "## Evaluation" in text
    assert "| LoRA | r 4, alpha 16, dropout 0.05, targets attention_ffn_output |" in text
    assert "records fingerprint: `abc123`" in text and "tokenized fingerprint: `def456`" in text
    assert r"turns end with <\|im_end\|>" in text  # a pipe inside a cell is escaped, the table stays whole


def test_a_run_that_recorded_little_gets_a_card_without_invented_numbers(tmp_path):
    card = str(build_card("merged", tmp_path, "/models/local-llama", "adapter"))
    assert "base_model" not in card.split("---")[1]  # a local path is no hub id
    assert "library_name: transformers" in card
    for absent in ("## The run", "## Evaluation", "## Recipe", "tokens/s", "validation loss"):
        assert absent not in card
    assert read_run(tmp_path).val_loss is None


def test_written_cards_are_recognised_and_hub_ids_told_from_paths(run, tmp_path):
    path = write_card(tmp_path / "out", build_card("gguf", run, "HuggingFaceTB/SmolLM2-135M-Instruct", "x"))
    assert is_nextai_card(path) and "library_name: gguf" in path.read_text()
    assert hub_id("meta-llama/Llama-2-70b-hf") == "meta-llama/Llama-2-70b-hf"
    assert hub_id("tiny") is None and hub_id("model.gguf") is None and hub_id(str(run)) is None
