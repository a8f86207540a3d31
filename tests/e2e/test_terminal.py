"""What a person sees in a terminal, from the real commands in a pseudo-terminal: `nextai fit`'s progress bar (the
steps this run trains, the budget's ETA and time left, log lines above it) and its end-of-run summary, and
`nextai evaluate`'s bar per task; and the epoch `run.json` records."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from nextai.main import main

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
STEPS = 6  # the tiny config's epoch has 74 micro batches (37 optimizer steps)
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def in_terminal(args: list[str], timeout: float = 600) -> tuple[int, list[str]]:
    """Run `nextai ARGS` on a 200-column pseudo-terminal (stdout and stderr both); its exit status and the lines it
    drew, escape sequences removed, each carriage-return redraw a line of its own."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}
    process = subprocess.Popen([sys.executable, "-m", "nextai", *args], stdin=slave, stdout=slave, stderr=slave,
                               env=env, close_fds=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other side closed
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
        os.close(master)
    text = ESCAPES.sub("", output.decode("utf-8", errors="replace"))
    return code, [line.rstrip() for line in re.split(r"\r\n|\r|\n", text)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, list[str]]:
    run = tmp_path_factory.mktemp("terminal-run")
    code, lines = in_terminal(["fit", "--config", TINY, "--trainer.default_root_dir", str(run),
                               "--trainer.max_steps", str(STEPS)])
    assert code == 0, "\n".join(lines[-40:])
    return run, lines


def row(lines: list[str], name: str) -> str:
    """The value column of the summary table's row `name`."""
    found = [line for line in lines if re.match(rf"[│|]\s*{re.escape(name)}\s+[│|]", line)]
    assert found, f"no summary row {name!r} in:\n" + "\n".join(lines[-30:])
    return found[-1].split("│" if "│" in found[-1] else "|")[2].strip()


def test_the_bar_counts_the_steps_this_run_trains_with_the_budget_eta(fitted):
    run, lines = fitted
    bars = [line for line in lines if line.startswith("Epoch ")]
    assert bars, "\n".join(lines[-40:])
    totals = {int(m.group(2)) for line in bars for m in [re.search(r"step (\d+)/(\d+)", line)] if m}
    assert totals == {STEPS}  # not the epoch's 74 micro batches, nor its 37 steps
    assert not any(re.search(r"\b\d+/74\b", line) for line in bars)
    assert any(f"step {STEPS}/{STEPS}" in line for line in bars)
    assert all(line.startswith("Epoch 0/0") for line in bars)  # 6 steps end the run inside its first epoch
    assert any(re.search(r"ETA \d\d:\d\d \(in [0-9hms.]+\) · budget \S+ left of 30m", line) for line in bars)
    assert any(re.search(r"\d+\.\d\ds/step", line) for line in bars)
    # nextai's log lines printed while the bar is live start lines of their own, above the bar
    for message in ("budget: a checkpoint and adapter save takes", "adapter written to"):
        assert any(re.match(rf"INFO\s+{message}", line) for line in lines)
        assert not any(message in line for line in bars)


def test_the_summary_shows_losses_throughput_reason_paths_and_next_commands(fitted):
    run, lines = fitted
    assert any(line.startswith(f"Run finished: {run}") for line in lines)
    assert row(lines, "ended") == f"finished: trainer.max_steps {STEPS} reached"
    assert row(lines, "steps") == f"{STEPS} of {STEPS} (epoch 0)"
    last_bar = [line for line in lines if line.startswith("Epoch ")][-1]
    shown_loss = float(re.search(r"train_loss: (\d+\.\d+)", last_bar).group(1))
    assert float(row(lines, "final train loss")) == pytest.approx(shown_loss, abs=5e-4)
    assert row(lines, "final validation loss") == "-"  # 6 steps end before the epoch's validation
    assert float(row(lines, "tokens/s").split()[0].replace(",", "")) > 0
    assert re.fullmatch(r"\d+\.\d\d GiB peak RSS \(CPU run\)", row(lines, "peak memory"))
    assert re.fullmatch(r"\S+ of 30m", row(lines, "budget used"))
    assert row(lines, "checkpoint") == str(run / "checkpoints" / "last.ckpt")
    assert row(lines, "adapter") == str(run / "adapter") and (run / "adapter" / "adapter_config.json").is_file()
    for command in ("chat", "evaluate"):
        assert f"  nextai {command} --config {TINY} --trainer.default_root_dir {run}" in lines
    assert not any(line.strip().startswith("nextai fit") for line in lines)  # nothing to resume
    assert json.loads((run / "run.json").read_text())["epoch"] == 0


def test_evaluate_draws_a_bar_per_task(fitted):
    run, _ = fitted
    code, lines = in_terminal(["evaluate", "--config", TINY, "--trainer.default_root_dir", str(run),
                               "--eval_data", "bundled", "--limit", "2", "--tasks", "[mmlu, truthfulqa]"])
    assert code == 0, "\n".join(lines[-40:])
    mmlu = [line for line in lines if line.startswith("MMLU ")]
    truthfulqa = [line for line in lines if line.startswith("TruthfulQA ")]
    # two MMLU runs of 2 instances each, one TruthfulQA run; both bars show from the start
    assert " 0/4 examples" in mmlu[0] and " 0/2 examples" in truthfulqa[0]
    assert any(" 4/4 examples" in line for line in mmlu) and any(" 2/2 examples" in line for line in truthfulqa)
    assert "| MMLU | TruthfulQA |" in lines  # the results table follows the bars


@pytest.mark.parametrize(("extra", "step", "epoch"), [
    (["--trainer.max_epochs", "1", "--trainer.max_steps", "2"], 2, 0),  # stopped inside its only epoch
    (["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4"], 4, 1),  # two whole epochs of 2 steps
])
def test_run_json_names_the_last_epoch_trained(tmp_path, extra, step, epoch):
    main(["fit", "--config", TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_val_batches", "1",
          *extra])
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["state"], record["step"], record["epoch"]) == ("finished", step, epoch)
