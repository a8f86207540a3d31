"""Quantization, LoRA presets, attention choice and optimizer settings, checked without loading a model."""


import pytest
import torch

from nextai.errors import NextaiError
from nextai.modules.attention import ATTENTION_CHOICES, choose_attention
from nextai.modules.lora import LORA_PRESETS, lora_config, lora_target_modules
from nextai.modules.optim import OPTIMIZERS, STATE_BYTES_PER_PARAM, build_optimizer, build_schedule
from nextai.modules.quantization import Quantization


def test_default_quantization_is_the_reports_table_2():
    config = Quantization().to_bnb_config()
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.llm_int8_threshold == 6.0 and config.llm_int8_skip_modules is None
    assert not config.llm_int8_enable_fp32_cpu_offload and not config.llm_int8_has_fp16_weight


def test_quantization_choices():
    assert Quantization(load_in_4bit=False).to_bnb_config() is None
    with pytest.raises(NextaiError, match="both true"):
        Quantization(load_in_8bit=True).to_bnb_config()


def test_presets_are_the_five_combinations_of_table_5():
    assert set(LORA_PRESETS) == {"key_query", "attention", "ffn", "all", "attention_ffn_output"}
    assert lora_target_modules("attention_ffn_output") == ["o_proj", "down_proj"]
    assert lora_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(NextaiError, match="unknown preset 'attn'; presets: key_query, attention"):
        lora_target_modules("attn")
    with pytest.raises(NextaiError, match="lora_r must be a positive"):
        lora_config(0, 16, 0.05, "all")


def test_attention_choice_on_cpu():
    assert choose_attention("auto", "cpu")[0] == "sdpa"
    assert choose_attention("eager", "cpu") == ("eager", "requested")
    with pytest.raises(NextaiError, match="flash_attention_2 needs a CUDA GPU"):
        choose_attention("flash_attention_2", "cpu")
    with pytest.raises(NextaiError, match="unknown value 'flash'; expected one of auto, flash_attention_2, sdpa, "
                                          "eager$"):
        choose_attention("flash", "cpu")
    assert ATTENTION_CHOICES == ("auto", "flash_attention_2", "sdpa", "eager")


def test_optimizers_and_cosine_schedule_with_warmup():
    import bitsandbytes as bnb

    params = [torch.nn.Parameter(torch.zeros(64, 64))]
    assert isinstance(build_optimizer("paged_adamw_8bit", params, 3e-4, 0.0), bnb.optim.PagedAdamW8bit)
    assert isinstance(build_optimizer("adamw_8bit", params, 3e-4, 0.0), bnb.optim.AdamW8bit)
    optimizer = build_optimizer("adamw", params, 3e-4, 0.1)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.1
    schedule = build_schedule("cosine", optimizer, warmup_steps=10, total_steps=110)
    rates = []
    for _ in range(110):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(1.5e-4) and rates[10] == pytest.approx(3e-4)
    assert rates[60] == pytest.approx(1.5e-4, rel=1e-6)  # cosine half-way
    assert rates[-1] < 1e-6
    with pytest.raises(NextaiError, match="unknown schedule 'cosinus'"):
        build_schedule("cosinus", optimizer, 10, 100)


def test_every_optimizer_is_buildable_and_has_a_state_size():
    assert OPTIMIZERS == ("paged_adamw_8bit", "adamw_8bit", "adamw")
    assert set(STATE_BYTES_PER_PARAM) == set(OPTIMIZERS)  # the memory plan sizes every optimizer it can build
    params = [torch.nn.Parameter(torch.zeros(64, 64))]
    with pytest.raises(NextaiError, match="unknown optimizer 'sgd'; expected one of paged_adamw_8bit, adamw_8bit, "
                                          "adamw$"):
        build_optimizer("sgd", params, 3e-4, 0.0)
    from nextai.modules.qlora import QLoRAModule

    with pytest.raises(NextaiError, match="unknown optimizer 'sgd'"):  # at construction, before any loading
        QLoRAModule(optimizer="sgd")


def test_plan_without_a_budget_callback_assumes_the_budgets_default():
    from nextai.callbacks.budget import WallClockBudget
    from nextai.trainer import NextaiTrainer

    assert NextaiTrainer(logger=False, enable_checkpointing=False).budget_limit_s() == 24 * 3600
    trainer = NextaiTrainer(logger=False, enable_checkpointing=False, callbacks=[WallClockBudget(limit="90m")])
    assert trainer.budget_limit_s() == 90 * 60


def test_a_flash_attn_that_does_not_import_is_not_chosen(tmp_path, monkeypatch, log_messages):
    """A flash-attn built for another torch is found by the import system but fails to import (undefined symbol)."""
    from nextai.modules import attention

    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    attention.flash_attn_unusable.cache_clear()
    messages = log_messages(attention.log.name)
    try:
        assert not attention.flash_attn_available()
        assert not attention.flash_attn_available()  # tried once, logged once
        assert messages == [
            "flash-attn is installed but does not import (ImportError: flash_attn_2_cuda.so: undefined symbol: "
            "_ZN3c104cuda9SetDeviceEi); torch's attention is used instead"]
        implementation, reason = choose_attention("auto", "cuda")
        assert implementation == "sdpa" and "does not import" in reason
        assert choose_attention("auto", "cuda", packed=True)[0] != "flash_attention_2"
        with pytest.raises(NextaiError, match="needs flash-attn: flash-attn is installed but does not import"):
            choose_attention("flash_attention_2", "cuda")
    finally:
        attention.flash_attn_unusable.cache_clear()
