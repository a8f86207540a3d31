"""`nextai bench`'s options and table, without a GPU: the allocator cap it was measured under is on the page."""

import pytest

from nextai.bench.command import markdown, parse_args
from nextai.errors import NextaiError

HEADER = {"shape": "70b", "lengths": ["fixed:1024x400"], "gpu": "NVIDIA H100 80GB HBM3", "matmul_tflops": 779.4,
          "torch": "2.11.0", "transformers": "5.17.0", "bitsandbytes": "0.50.2", "date": "2026-12-06",
          "command": "nextai bench --allocator-cap off"}


def row(recipe: str, allocator_cap: str, retries: int) -> dict:
    return {"recipe": recipe, "description": "kernels, capped", "status": "ok", "lengths": "fixed:1024x400",
            "micro_batch": "pack of 4096", "attention": "nextai_varlen", "peak_allocated_gib": 35.89,
            "peak_reserved_gib": 36.46, "step_s": 1.862, "step_tokens": 4096, "tokens_per_s": 2199.2,
            "matmul_fraction": 1.163, "epoch_hours": 0.05, "memory_plan": "80 offload of 80 layers",
            "allocator": {"alloc_retries": retries, "inactive_split_peak_gib": 0.0}, "allocator_cap": allocator_cap}


def test_the_allocator_cap_defaults_to_the_plans_and_reads_sizes():
    assert parse_args([]).allocator_cap == "plan"
    assert parse_args(["--allocator-cap", "off"]).allocator_cap == "off"
    assert parse_args(["--allocator_cap", "37GiB"]).allocator_cap == "37GiB"


def test_a_bad_allocator_cap_is_named_before_any_gpu_work():
    with pytest.raises(NextaiError, match=r"--allocator-cap: cannot read 'lots'"):
        parse_args(["--allocator-cap", "lots"])


def test_the_table_shows_the_retries_and_which_cap_held_the_allocator():
    table = markdown([row("capped", "plan", 12), row("capped:base_matmul=fp8", "off", 0)], HEADER)
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| recipe"))
    capped = next(line for line in lines if line.startswith("| capped |"))
    cells = dict(zip(header.split("|"), capped.split("|")))
    assert cells[" allocator retries "].strip() == "12"
    assert header.count("|") == capped.count("|") == lines[lines.index(header) + 1].count("|")
    assert "Torch's allocator uncapped (`--allocator-cap off`)" in table
    assert table.count("Torch's allocator") == 1  # the recipe held to its own plan says nothing more
    failed = markdown([{"recipe": "fast", "description": "kernels", "status": "out of memory",
                       "error": "CUDA out of memory"}], HEADER)
    failed_line = next(line for line in failed.splitlines() if line.startswith("| fast"))
    assert failed_line.count("|") == header.count("|")
