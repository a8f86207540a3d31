"""What a person reads: a short fit prints only nextai's own lines on stderr (no library warnings, no trainer
chatter), and commands that do not train print none of the trainer's lines either. The command line's entry point
starts without importing torch or Lightning for --help, --version and compare."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
# What Lightning, transformers and bitsandbytes printed before nextai.quiet (each seen on this CPU).
CHATTER = ("Seed set to", "GPU available", "TPU available", "litlogger", "Loading `train_dataloader`",
           "weights_only", "Warning", "warnings.warn", "deprecated", "gemm_4bit_forward", "Loading weights",
           "Total params", "`Trainer.fit` stopped")


def nextai(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nextai", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_prepare_then_a_short_fit_print_only_nextais_lines(tmp_path, nextai_cache):
    """prepare (which builds the mixture and tokenizes: its per-source lines are the first run's) prints no trainer
    line; the fit after it prints nextai's lines alone, a dozen at most."""
    run = str(tmp_path / "run")
    done = nextai("prepare", "--config", TINY, "--trainer.default_root_dir", run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [word for word in (*CHATTER, "effective batch") if word in done.stderr + done.stdout]

    done = nextai("fit", "--config", TINY, "--trainer.default_root_dir", run, "--trainer.max_steps", "3",
                  "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    print("\n".join(lines))
    assert [line for line in lines if not line.startswith("INFO ")] == []  # no warnings, no library lines
    assert len(lines) <= 12
    assert not [word for word in CHATTER if word in done.stderr + done.stdout]
    assert "trainable parameters: 524,288 of 2,229,504" in done.stderr  # nextai's count, not Lightning's table


def test_help_version_compare_and_plan_start_without_lightning(tmp_path):
    probe = ("import sys, runpy; sys.argv = ['nextai', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('nextai', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('IMPORTED', *sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    for args in (["--help"], ["--version"], ["compare", "--help"]):
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        print(args, f"{time.monotonic() - start:.2f}s")
        assert done.stdout.strip().splitlines()[-1] == "IMPORTED", (args, done.stdout[-500:], done.stderr[-500:])
    run = tmp_path / "run"  # a run's measured speed alone: plan needs neither torch nor Lightning
    run.mkdir()
    (run / "metrics.csv").write_text("step,train/tokens_per_sec\n5,1000\n10,1000\n")
    table = str(Path(TINY).parents[1] / "benchmarks" / "results" / "bench-70b-v5.json")
    plan = ["plan", "--config", TINY, "--lengths", "v5-like"]
    for args, imported in (([*plan, "--run", str(run)], ""), ([*plan, "--bench", table], " torch")):
        start = time.monotonic()  # with --bench torch's generator orders the batches, as in training
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        print(args[-2:], f"{time.monotonic() - start:.2f}s")
        assert "nextai plan: v5-like" in done.stdout, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "IMPORTED" + imported, (args, done.stderr[-500:])
    listed = subprocess.run([sys.executable, "-m", "nextai", "--help"], capture_output=True, text=True).stdout
    for command in ("fit", "validate", "prepare", "plan", "evaluate", "chat", "serve", "export", "push", "bench",
                    "compare"):
        assert f"\n  {command} " in listed
