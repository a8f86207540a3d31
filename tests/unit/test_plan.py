"""`nextai plan` arithmetic: measured time models applied to other data, budget and memory verdicts."""

import json

import pytest

from nextai.bench.plan import (DDP_EFFICIENCY, Projection, advice, device_assumptions, load_bench_rows,
                               project_bench_row, project_run, scale_to_devices)
from nextai.errors import NextaiError

ROW = {"recipe": "report", "lengths": "v5-like", "status": "ok", "fit_intercept_s": 0.5, "fit_s_per_token": 0.001,
       "optimizer_s": 0.01, "peak_reserved_gib": 39.0}


def test_padded_row_projects_every_micro_batch():
    lengths = [100] * 8 + [1000] * 4  # report recipe: micro batch 1, 4 a step -> 12 micro batches, 3 steps
    projection = project_bench_row(ROW, lengths, epochs=1)
    seconds = 8 * (0.5 + 0.1) + 4 * (0.5 + 1.0) + 3 * 0.01
    assert projection.hours == pytest.approx(seconds / 3600)
    assert projection.tokens_per_s == pytest.approx(sum(lengths) / seconds)
    assert project_bench_row(ROW, lengths, epochs=2).hours == pytest.approx(2 * seconds / 3600)


def test_packed_row_counts_packs():
    row = {**ROW, "recipe": "fast", "fit_intercept_s": 0.0, "fit_s_per_token": 0.0005, "optimizer_s": 0.0}
    lengths = [1024] * 40  # packs of 4096: 10 packs
    projection = project_bench_row(row, lengths, epochs=1)
    assert projection.batching == "packs of 4096"
    assert projection.hours == pytest.approx(40 * 1024 * 0.0005 / 3600)


def test_run_speed_skips_the_warm_up_window(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,train/tokens_per_sec\n0,100\n5,1000\n10,1000\n")
    (tmp_path / "peak_memory.json").write_text(json.dumps({"run_peak": {"peak_reserved_gib": 40.5}}))
    projection = project_run(tmp_path, [500] * 36, epochs=1)
    assert projection.tokens_per_s == 1000 and projection.peak_reserved_gib == 40.5
    assert projection.hours == pytest.approx(18000 / 1000 / 3600)


def test_advice_picks_the_fastest_that_fits():
    slow = Projection("slow", "padded", 20.0, 500, 36.0)
    fast = Projection("fast", "packs", 5.0, 2000, 130.0)
    capped = Projection("capped", "packs", 8.0, 1200, 36.4)
    assert advice([slow, fast, capped], 24, 36.5) == ["fastest that fits: capped, 8.0 h (packs)"]
    lines = advice([slow, fast, capped], 6, 36.5)
    assert lines[0] == "nothing measured fits both the budget and the memory cap"
    assert "capped: 8.0 h, so the budget covers 75 %" in lines[1]


def test_bad_tables_are_named(tmp_path):
    with pytest.raises(NextaiError, match="bench table not found"):
        load_bench_rows(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(NextaiError, match="not a nextai bench JSON table"):
        load_bench_rows(tmp_path / "x.json")


def test_devices_divide_the_hours_by_the_assumed_efficiency():
    one = project_bench_row(ROW, [100] * 8 + [1000] * 4, epochs=1)
    four = scale_to_devices(one, 4, efficiency=0.8)
    assert four.hours == pytest.approx(one.hours / 3.2)
    assert four.tokens_per_s == pytest.approx(one.tokens_per_s * 3.2)
    assert four.peak_reserved_gib == one.peak_reserved_gib  # DDP: every GPU holds the whole model
    assert four.source.endswith("x 4 GPUs (projected)") and four.devices == 4
    assert scale_to_devices(one, 1) == one
    assert scale_to_devices(one, 2).hours == pytest.approx(one.hours / (2 * DDP_EFFICIENCY))


def test_device_assumptions_are_stated():
    line = device_assumptions(4, 0.9)
    assert "projected, not measured" in line and "4 x 0.9 DDP efficiency" in line and "an assumption" in line
    assert "peak memory per GPU as on one GPU" in line


@pytest.mark.parametrize("devices, efficiency, message", [(0, 0.9, "devices must be at least 1, got 0"),
                                                          (2, 1.5, r"ddp_efficiency must be in \(0, 1\], got 1.5"),
                                                          (2, 0.0, r"ddp_efficiency must be in \(0, 1\], got 0.0")])
def test_bad_device_settings_are_named(devices, efficiency, message):
    with pytest.raises(NextaiError, match=message):
        scale_to_devices(Projection("x", "padded", 1.0, 100, None), devices, efficiency)
