"""The wall-clock budget stops a run cleanly at an optimizer step, and its checkpoint resumes at that step."""

import csv
from pathlib import Path

import pytest
import torch

from nextai.main import main

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def logged_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("train_loss")})


def test_budget_stop_then_resume(tmp_path, capsys):
    stopped = tmp_path / "stopped"
    # 200 epochs could never finish in 20 s: the budget must stop the run, save it and write the adapter.
    main(["fit", "--config", TINY, "--trainer.max_epochs", "200", "--budget.limit", "20s", "--budget.margin", "2s",
          "--trainer.default_root_dir", str(stopped),
          "--trainer.log_every_n_steps", "1"])
    logged = capsys.readouterr().err  # nextai's log lines
    assert "stopping at step" in logged and "budget:" in logged
    checkpoint = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    step = checkpoint["global_step"]
    assert 0 < step < 200 * 34
    # At an optimizer-step boundary: every micro batch trained so far belongs to a finished step.
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"]
    accumulation = checkpoint["hyper_parameters"].get("accumulate_grad_batches", 2)
    assert progress == step * accumulation
    assert (stopped / "adapter" / "adapter_model.safetensors").is_file()
    budget_state = next(v for k, v in checkpoint["callbacks"].items() if "WallClockBudget" in k)
    assert budget_state["elapsed_s"] < 20

    resumed = tmp_path / "resumed"
    main(["fit", "--config", TINY, "--trainer.max_epochs", "200", "--trainer.max_steps", str(step + 3),
          "--ckpt_path", str(stopped / "checkpoints" / "last.ckpt"), "--budget.limit", "1h",
          "--trainer.default_root_dir", str(resumed),
          "--trainer.log_every_n_steps", "1"])
    final = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == step + 3
    # Only the three new steps were trained in the resumed run, starting right after the stop.
    assert logged_steps(resumed) == [step, step + 1, step + 2]
    # The job's clock carries over: the resumed run's elapsed time includes the first run's.
    resumed_budget = next(v for k, v in final["callbacks"].items() if "WallClockBudget" in k)
    assert resumed_budget["elapsed_s"] > budget_state["elapsed_s"]
