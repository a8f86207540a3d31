"""Which strategy a config builds and what it is configured with: the effective batch over processes, and the FSDP
settings a 4-bit QLoRA model needs (FSDP itself needs CUDA and is not run here)."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch.distributed.fsdp.wrap import CustomPolicy

import nextai.cli
from nextai.cli import NextaiCLI
from nextai.errors import NextaiError
from nextai.fsdp.checkpoint import QLoRAFSDPStrategy
from nextai.modules.qlora import QLoRAModule
from nextai.modules.quantization import Quantization
from nextai.data.batching import accumulation_steps
from nextai.fsdp.strategy import decoder_layer_names, fsdp_quant_storage, qlora_fsdp_strategy, wraps_as_unit
from nextai.modules.compatibility import strategy_kind

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def cli(*args: str) -> NextaiCLI:
    return NextaiCLI(args=["--config", TINY, "--trainer.logger", "false", *args], run=False)


@pytest.mark.parametrize("batch, micro, world, expected", [(8, 4, 1, 2), (8, 4, 2, 1), (8, 2, 2, 2), (64, 1, 16, 4)])
def test_accumulation_keeps_the_effective_batch(batch, micro, world, expected):
    assert accumulation_steps(batch, micro, world) == expected
    assert accumulation_steps(batch, micro, world) * micro * world == batch


def test_indivisible_batch_names_the_values():
    with pytest.raises(NextaiError) as error:
        accumulation_steps(8, 4, 3)
    assert str(error.value) == ("data.batch_size 8 is not a multiple of data.micro_batch_size 4 x 3 processes "
                                "(trainer.devices x trainer.num_nodes) = 12: use a batch_size that is a multiple of "
                                "12, or fewer processes")


def test_one_process_config_is_unchanged():
    built = cli()
    assert isinstance(built.trainer.strategy, SingleDeviceStrategy)
    assert built.trainer.accumulate_grad_batches == 2  # tiny.yaml: 8 = 4 x 2


def test_ddp_config_divides_the_accumulation_by_the_processes():
    built = cli("--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2")
    assert isinstance(built.trainer.strategy, DDPStrategy)
    assert built.trainer.world_size == 2 and built.trainer.accumulate_grad_batches == 1
    two_nodes = cli("--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                    "--trainer.num_nodes", "2", "--data.batch_size", "16")
    assert two_nodes.trainer.accumulate_grad_batches == 1  # 16 = 4 x 1 x (2 devices x 2 nodes)


def test_ddp_config_with_an_indivisible_batch_fails_before_training():
    with pytest.raises(NextaiError, match="data.batch_size 8 is not a multiple of data.micro_batch_size 4 x 3"):
        cli("--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "3")


def test_fsdp_config_builds_nextai_strategy_and_bf16_storage(monkeypatch):
    """On a CPU nextai refuses FSDP; before that the CLI has set the storage dtype and built nextai's strategy."""
    built = {}

    def spy_strategy(layers, activation_checkpointing):
        built["strategy"] = qlora_fsdp_strategy(layers, activation_checkpointing)
        built["layers"], built["checkpointing"] = layers, activation_checkpointing
        return built["strategy"]

    def spy_storage(quantization, precision):
        built["quantization"] = quantization
        return fsdp_quant_storage(quantization, precision)

    monkeypatch.setattr(nextai.cli, "qlora_fsdp_strategy", spy_strategy)
    monkeypatch.setattr(nextai.cli, "fsdp_quant_storage", spy_storage)
    with pytest.raises(NextaiError, match="trainer.strategy fsdp needs CUDA GPUs .* on the cpu"):
        cli("--trainer.accelerator", "cpu", "--trainer.strategy", "fsdp", "--trainer.devices", "2",
            "--trainer.precision", "bf16-mixed", "--model.optimizer", "adamw")
    assert built["quantization"].bnb_4bit_quant_storage == "bfloat16"
    assert built["layers"] == {"LlamaDecoderLayer"} and built["checkpointing"] is True
    assert isinstance(built["strategy"], QLoRAFSDPStrategy)


@pytest.mark.parametrize("optimizer", ["paged_adamw_8bit", "adamw_8bit"])
def test_fsdp_refuses_8bit_optimizers_before_launching(optimizer):
    with pytest.raises(NextaiError, match=f"model.optimizer {optimizer} keeps 8-bit states per FSDP shard"):
        cli("--trainer.accelerator", "cpu", "--trainer.strategy", "fsdp", "--trainer.devices", "2",
            "--model.optimizer", optimizer)


def test_fsdp_strategy_settings():
    strategy = qlora_fsdp_strategy({"LlamaDecoderLayer"}, activation_checkpointing=True)
    kwargs = strategy.kwargs
    assert kwargs["use_orig_params"] is True and kwargs["limit_all_gathers"] is True
    assert isinstance(kwargs["auto_wrap_policy"], CustomPolicy)
    assert strategy._state_dict_type == "full"
    assert isinstance(strategy._activation_checkpointing_kwargs["auto_wrap_policy"], CustomPolicy)
    assert qlora_fsdp_strategy({"LlamaDecoderLayer"}, False)._activation_checkpointing_kwargs == {}
    assert qlora_fsdp_strategy({"X"}, False, sharding_strategy="HYBRID_SHARD").sharding_strategy.name == "HYBRID_SHARD"


def test_strategy_names():
    fsdp = lambda strategy: strategy_kind(strategy) == "fsdp"  # noqa: E731
    assert fsdp("fsdp") and fsdp(qlora_fsdp_strategy({"X"}, False))
    assert not fsdp("ddp") and not fsdp("auto") and not fsdp(DDPStrategy())
    assert fsdp(type("N", (), {"class_path": "lightning.pytorch.strategies.FSDPStrategy"})())
    assert fsdp("fsdp_cpu_offload")  # one predicate: every hook gives it nextai's FSDP handling
    assert strategy_kind("ddp_spawn") == strategy_kind(DDPStrategy()) == "ddp" and strategy_kind("auto") == "single"


def test_quant_storage_follows_the_fsdp_dtype():
    assert fsdp_quant_storage(Quantization(), "bf16-mixed") == "bfloat16"  # the single-GPU uint8 is replaced
    assert fsdp_quant_storage(Quantization(bnb_4bit_quant_storage="bfloat16"), "bf16-mixed") is None
    assert fsdp_quant_storage(Quantization(load_in_4bit=False), "bf16-mixed") is None
    with pytest.raises(NextaiError, match="bnb_4bit_quant_storage float16 does not match the bfloat16"):
        fsdp_quant_storage(Quantization(bnb_4bit_quant_storage="float16"), "bf16-mixed")


def test_decoder_layer_names_come_from_the_config(tiny_model_dir):
    assert decoder_layer_names("tiny") == {"LlamaDecoderLayer"}


def units(model, layers: set[str]) -> dict[str, set[torch.dtype]]:
    """What FSDP would flatten with this policy: per unit (and the root), the dtypes of the parameters it owns
    (those not inside a nested unit)."""
    owned: dict[str, set[torch.dtype]] = {}

    def visit(module, unit: str, prefix: str) -> None:
        for parameter in module.parameters(recurse=False):
            owned.setdefault(unit, set()).add(parameter.dtype)
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            visit(child, path if wraps_as_unit(child, layers) else unit, path)

    visit(model, "<root>", "")
    return owned


def build(sharded: bool, base_model: str = "tiny") -> QLoRAModule:
    module = QLoRAModule(base_model=base_model, quantization=Quantization(bnb_4bit_quant_storage="bfloat16"),
                         attn_implementation="sdpa", lora_r=8, lora_targets="all", optimizer="adamw")
    module.build_model("cpu", "fsdp" if sharded else "single")
    return module


@pytest.mark.parametrize("prequantized", [False, True], ids=["quantized-at-load", "prequantized-uint8"])
def test_fsdp_units_flatten_one_dtype_each(tiny_model_dir, prequantized_tiny_dir, prequantized):
    """Each FSDP unit flattens parameters of one dtype: 4-bit weights stored as bf16 with bf16 norms in the decoder
    layers, fp32 LoRA weights in units of their own, also from a checkpoint saved quantized with uint8 storage.
    The single-GPU build (fp32 norms from k-bit preparation) would mix dtypes in a layer, which FSDP refuses."""
    layers = {"LlamaDecoderLayer"}
    sharded = build(sharded=True, base_model=str(prequantized_tiny_dir) if prequantized else "tiny")
    four_bit = [p for p in sharded.model.parameters() if type(p).__name__ == "Params4bit"]
    assert four_bit and all(p.dtype == torch.bfloat16 for p in four_bit)
    owned = units(sharded.model, layers)
    assert all(len(dtypes) == 1 for dtypes in owned.values()), owned
    lora_units = [u for u in owned if ".lora_A." in u or ".lora_B." in u]
    layer_units = [u for u in owned if u.endswith(tuple(f"layers.{i}" for i in range(8)))]
    assert lora_units and all(owned[u] == {torch.float32} for u in lora_units)
    assert len(layer_units) == len(sharded.model.get_base_model().model.layers)
    assert all(owned[u] == {torch.bfloat16} for u in layer_units)
    # The strategy, not the model, recomputes the decoder layers.
    assert not sharded.model.get_base_model().is_gradient_checkpointing

    single = units(build(sharded=False).model, layers)
    assert any(len(dtypes) > 1 for dtypes in single.values())


def test_fsdp_refuses_single_gpu_memory_levers(tiny_model_dir):
    module = QLoRAModule(base_model="tiny", offload_activations=True)
    with pytest.raises(NextaiError, match="model.offload_activations is a single-GPU lever"):
        module.build_model("cpu", "fsdp")
