"""The model's settings: typed groups with one default each, the flat names users write, and one compatibility
table that the README shows as it is."""

import inspect
from pathlib import Path

import pytest

from nextai.bench.recipes import DATA_KEYS, LOAD_KEYS, MODEL_KEYS
from nextai.errors import NextaiError
from nextai.modules.compatibility import markdown_table, resolve
from nextai.modules.qlora import QLoRAModule
from nextai.modules.settings import FLAT, ModelSettings, default, flat_help, flat_names


def test_flat_names_round_trip_through_the_groups():
    settings = ModelSettings.from_flat(lora_r=8, memory_budget="36.5GiB", base_matmul="fp8", optimizer="adamw",
                                       lora_targets=["q_proj", "v_proj"])
    assert (settings.lora.r, settings.memory.memory_budget, settings.kernels.base_matmul) == (8, "36.5GiB", "fp8")
    assert settings.optimizer.name == "adamw" and settings.lora.targets == ("q_proj", "v_proj")
    assert ModelSettings.from_flat(**settings.flat()) == settings
    assert settings.replace(lora_r=16).lora.r == 16 and settings.lora.r == 8  # frozen: a copy changes
    with pytest.raises(NextaiError, match="model.lora_rank: unknown setting"):
        ModelSettings.from_flat(lora_rank=8)


def test_the_module_signature_takes_its_defaults_and_help_from_the_settings():
    parameters = inspect.signature(QLoRAModule).parameters
    assert set(flat_names()) == set(parameters)
    for name in FLAT:
        assert parameters[name].default == default(name), name
    assert all(flat_help()[name] for name in FLAT)  # every setting is described once, in its group
    assert "lora_r: LoRA rank." in QLoRAModule.__doc__


def test_bench_keys_come_from_the_settings():
    assert MODEL_KEYS == tuple(FLAT)
    assert set(LOAD_KEYS) <= set(FLAT) | set(DATA_KEYS)


def test_the_readme_shows_the_compatibility_table_as_it_is():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme


@pytest.mark.parametrize("flat, strategy, device, message", [
    ({"liger_kernels": True}, "single", "cpu", "model.liger_kernels needs a CUDA GPU"),
    ({"base_matmul": "fp8"}, "single", "cpu", "model.base_matmul needs a CUDA GPU"),
    ({"base_matmul": "fp8", "lean_lora": False}, "single", "cuda", "model.base_matmul fp8 needs the lean LoRA"),
    ({"memory_budget": "30GiB"}, "fsdp", "cuda", "model.memory_budget is a single-GPU lever"),
    ({"optimizer": "adamw_8bit"}, "fsdp", "cuda", "model.optimizer adamw_8bit keeps 8-bit states per FSDP shard"),
])
def test_refusals_come_from_the_table(flat, strategy, device, message):
    with pytest.raises(NextaiError, match=message):
        resolve(ModelSettings.from_flat(**flat), strategy, device)


def test_changes_come_from_the_table_and_are_logged_once(log_messages):
    messages = log_messages("nextai.modules.compatibility")
    fsdp = resolve(ModelSettings.from_flat(optimizer="adamw"), "fsdp", "cuda")
    assert not fsdp.lora.lean and not fsdp.memory.kbit_preparation
    budget = resolve(ModelSettings.from_flat(memory_budget="card", gradient_checkpointing=False), "single", "cuda")
    assert budget.memory.gradient_checkpointing
    resolve(ModelSettings.from_flat(memory_budget="card", gradient_checkpointing=False), "single", "cuda")
    assert sum("model.memory_budget" in m for m in messages) <= 1
    assert resolve(ModelSettings(), "single", "cpu") == ModelSettings()  # the defaults run as they are
