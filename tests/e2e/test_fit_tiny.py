"""`nextai fit` / `nextai validate` end to end on the tiny model through the real 4-bit + LoRA path (CPU)."""

import csv
import json
from pathlib import Path

import pytest
import torch

from nextai.main import main

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The README's default run, exactly as configured (5 epochs of the bundled samples)."""
    run = tmp_path_factory.mktemp("tiny-run")
    main(["fit", "--config", TINY, "--trainer.default_root_dir", str(run),
         ])
    return run


def test_fit_leaves_checkpoint_metrics_memory_and_adapter(tiny_run):
    assert list(tiny_run.glob("checkpoints/*.ckpt"))
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    val = column(metrics(tiny_run), "val_loss")
    assert len(val) == 5 and val[-1] < val[0] - 0.3, val  # validation loss falls
    assert column(metrics(tiny_run), "train/tokens_per_sec") and column(metrics(tiny_run), "lr-PagedAdamW8bit")
    memory = json.loads((tiny_run / "peak_memory.json").read_text())
    assert memory["device"] == "cpu" and "resident set size" in memory["measure"]
    assert memory["run_peak"]["cpu_peak_rss_gib"] > 0.1
    assert (tiny_run / "adapter" / "adapter_config.json").is_file()
    assert (tiny_run / "adapter" / "adapter_model.safetensors").is_file()


# The README run's validation loss after each of its 5 epochs (fp32 on the CPU), pinned so that a change in
# behaviour (data order, masking, LoRA, dropout draws, the optimizer) fails loudly; a refactor leaves it alone.
# bf16 compute moves the second value by 0.007, so the tolerance tells such changes apart from CPU kernels' rounding.
TINY_VAL_LOSS = [6.2128, 5.8614, 5.5301, 5.4362, 5.4172]


def test_the_tiny_validation_loss_curve_is_pinned(tiny_run):
    assert column(metrics(tiny_run), "val_loss") == pytest.approx(TINY_VAL_LOSS, abs=2e-3)


def test_checkpoint_holds_only_the_lora_weights(tiny_run):
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    names = list(checkpoint["state_dict"])
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"] and checkpoint["loops"]


def test_plain_peft_loads_the_adapter_with_the_trained_logits(tiny_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from nextai.modules.qlora import QLoRAModule
    from nextai.modules.quantization import Quantization

    adapter = tiny_run / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=Quantization().to_bnb_config(),
                                                dtype=torch.bfloat16)
    plain = PeftModel.from_pretrained(base, str(adapter)).eval()

    trained = QLoRAModule.load_from_checkpoint(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu")
    trained.model.eval()
    ids = torch.tensor([[1, 407, 331, 365, 349, 331, 406, 755]])
    with torch.no_grad():
        expected = trained.model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
        with plain.disable_adapter():
            untrained = plain(input_ids=ids).logits
    # The plain load keeps norms and head in bf16 (no k-bit preparation): equal up to bf16 rounding, while the
    # adapter itself moves the logits by far more.
    adapter_error = (got.float() - expected).abs().max().item()
    adapter_effect = (untrained.float() - expected).abs().max().item()
    print(f"max |plain - trained| = {adapter_error:.4f}, max |base - trained| = {adapter_effect:.4f}")
    assert adapter_error < 0.1 and adapter_effect > 10 * adapter_error


def test_validate_restores_the_checkpoint(tiny_run, tmp_path):
    main(["validate", "--config", TINY, "--ckpt_path", str(tiny_run / "checkpoints" / "last.ckpt"),
          "--trainer.default_root_dir", str(tmp_path / "restored")])
    main(["validate", "--config", TINY, "--trainer.default_root_dir", str(tmp_path / "fresh")])
    restored = column(metrics(tmp_path / "restored" / "validate"), "val_loss")
    fresh = column(metrics(tmp_path / "fresh" / "validate"), "val_loss")
    final_fit = column(metrics(tiny_run), "val_loss")[-1]
    assert restored[0] == pytest.approx(final_fit, abs=1e-4)  # the same weights, the same split
    assert fresh[0] > restored[0] + 0.3  # without the checkpoint: an untrained adapter


def test_validate_scores_the_runs_newest_checkpoint_by_default_and_says_so(tiny_run, capfd):
    """No --ckpt_path: the newest checkpoint of the run directory, named on stderr; not an untrained adapter."""
    kept = (tiny_run / "metrics.csv").read_bytes()
    newest = max((tiny_run / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    main(["validate", "--config", TINY, "--trainer.default_root_dir", str(tiny_run)])
    assert f"validate: scoring {newest}" in capfd.readouterr().err
    scored = column(metrics(tiny_run / "validate"), "val_loss")[-1]
    assert scored == pytest.approx(column(metrics(tiny_run), "val_loss")[-1], abs=1e-4)
    assert (tiny_run / "metrics.csv").read_bytes() == kept


def test_validate_in_a_run_directory_keeps_the_training_records(tiny_run):
    kept = {name: (tiny_run / name).read_bytes() for name in ("metrics.csv", "config.yaml", "peak_memory.json")}
    main(["validate", "--config", TINY, "--ckpt_path", "last", "--trainer.default_root_dir", str(tiny_run)])
    assert {name: (tiny_run / name).read_bytes() for name in kept} == kept
    assert column(metrics(tiny_run / "validate"), "val_loss")
    assert (tiny_run / "peak_memory-validate.json").is_file()


def test_cli_override_reaches_the_module(tmp_path):
    main(["fit", "--config", TINY, "--model.lora_r", "8", "--data.cutoff_len", "128", "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(tmp_path)])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["lora_r"] == 8
    assert checkpoint["hyper_parameters"]["cutoff_len"] == 128  # linked from data.cutoff_len
    a_weights = [v for k, v in checkpoint["state_dict"].items() if ".lora_A." in k]
    assert a_weights and all(w.shape[0] == 8 for w in a_weights)
    assert checkpoint["global_step"] == 2
    config = (tmp_path / "config.yaml").read_text()
    assert "lora_r: 8" in config


def test_print_config_shows_links_and_overrides(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", TINY, "--model.lora_r", "8", "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "lora_r: 8" in out and "base_model: tiny" in out
