"""The end-of-run summary's content: the table's rows, the next commands, peak memory and why a run ended."""

from types import SimpleNamespace

from rich.console import Console

from nextai.callbacks.summary import RunReport, finished_reason, next_commands, peak_memory_text, print_summary


def printed(report: RunReport) -> list[str]:
    console = Console(record=True, width=160, color_system=None)
    print_summary(report, console)
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_a_stopped_run_shows_why_its_numbers_and_how_to_resume_first():
    report = RunReport(run_dir="runs/v5", step=812, total_steps=3000, epoch=0, stopped=True,
                       reason="budget: 9m58s left of 24h; the next step would not fit", train_loss=1.23456,
                       val_loss=1.5, val_step=500, tokens_per_sec=1404.4,
                       peak_memory="36.50 GiB reserved, 30.10 GiB allocated (NVIDIA H100)", budget_used="23h50m02s of 24h",
                       checkpoint="runs/v5/checkpoints/last.ckpt", adapter="runs/v5/adapter",
                       next_commands=next_commands(["configs/v5.yaml"], "runs/v5", stopped=True))
    lines = printed(report)
    assert lines[0] == "Run stopped early: runs/v5"
    rows = {cells[1].strip(): cells[2].strip() for cells in (line.split("│") for line in lines) if len(cells) == 4}
    assert rows == {
        "stopped because": "budget: 9m58s left of 24h; the next step would not fit",
        "steps": "812 of 3000 (epoch 0)", "final train loss": "1.2346", "final validation loss": "1.5000 (step 500)",
        "tokens/s": "1,404 (training time)", "peak memory": "36.50 GiB reserved, 30.10 GiB allocated (NVIDIA H100)",
        "budget used": "23h50m02s of 24h", "checkpoint": "runs/v5/checkpoints/last.ckpt", "adapter": "runs/v5/adapter"}
    assert lines[-4:] == ["next:",
                          "  nextai fit --config configs/v5.yaml --trainer.default_root_dir runs/v5 --ckpt_path last",
                          "  nextai chat --config configs/v5.yaml --trainer.default_root_dir runs/v5",
                          "  nextai evaluate --config configs/v5.yaml --trainer.default_root_dir runs/v5"]


def test_unknown_values_show_as_a_dash_and_long_commands_stay_on_one_line():
    long_dir = "/data/" + "x" * 200 + "/my run"
    report = RunReport(run_dir=long_dir, step=0, total_steps=None, epoch=None, stopped=False, reason="finished",
                       next_commands=next_commands(["a.yaml", "b.yaml"], long_dir, stopped=False))
    lines = printed(report)
    for name in ("final train loss", "final validation loss", "tokens/s", "peak memory", "checkpoint", "adapter"):
        assert any(line.startswith(f"│ {name}") and line.split("│")[2].strip() == "-" for line in lines)
    assert f"  nextai chat --config a.yaml --config b.yaml --trainer.default_root_dir '{long_dir}'" in lines


def test_peak_memory_in_one_line():
    assert peak_memory_text({"run_peak": {"peak_allocated_gib": 30.1, "peak_reserved_gib": 36.5},
                             "device_name": "NVIDIA H100"}) == "36.50 GiB reserved, 30.10 GiB allocated (NVIDIA H100)"
    assert peak_memory_text({"run_peak": {"cpu_rss_gib": 0.5, "cpu_peak_rss_gib": 0.671}}) == \
        "0.67 GiB peak RSS (CPU run)"
    assert peak_memory_text({"run_peak": {}}) is None


def test_why_a_run_no_callback_stopped_ended():
    trainer = SimpleNamespace(max_steps=6, global_step=6, max_epochs=5, current_epoch=1)
    assert finished_reason(trainer) == "finished: trainer.max_steps 6 reached"
    trainer = SimpleNamespace(max_steps=-1, global_step=185, max_epochs=5, current_epoch=5)
    assert finished_reason(trainer) == "finished: trainer.max_epochs 5 done"
    assert finished_reason(SimpleNamespace(max_steps=-1, global_step=3, max_epochs=5, current_epoch=0)) == "finished"
