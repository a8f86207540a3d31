"""`PeakMemoryMonitor`: peak GPU memory for the run and for each logging window, logged and kept in
`peak_memory.json`. On a CPU it records the process's peak resident set size instead, labelled as such. With several
processes each one's peak is gathered to rank 0, which writes them all."""

import resource
import socket
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nextai.callbacks.boundary import StepBoundary
from nextai.atomic import write_json
from nextai.callbacks.metrics import log_metrics
from nextai.rundir import PEAK_MEMORY_FILE, run_dir
from nextai.units import gib


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class PeakMemoryMonitor(Callback):
    """Records peak memory every `log_every_n_steps` optimizer steps and for the whole run.

    CUDA: torch's caching allocator peaks, `peak_allocated_gib` (tensors) and `peak_reserved_gib` (what the process
    holds from the driver; what `nvidia-smi` shows minus the CUDA context), reset after each window.
    CPU: `cpu_peak_rss_gib`, the process's peak resident memory (cannot be reset, so windows show current RSS).
    Several processes: `ranks` lists every process's run peak and step, `run_peak` is the highest of any rank (the
    one that runs out first), `windows` are rank 0's.
    """

    def __init__(self, filename: str = PEAK_MEMORY_FILE) -> None:
        self.filename = filename
        self.windows: list[dict] = []
        self.run_peak: dict[str, float] = {}
        self._device: torch.device | None = None
        self._boundary = StepBoundary()
        self._measuring = False  # set once a loop runs: a run that failed before that leaves no file

    @property
    def on_cuda(self) -> bool:
        return self._device is not None and self._device.type == "cuda"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._device = trainer.strategy.root_device
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self._device)

    def _window(self) -> dict[str, float]:
        if self.on_cuda:
            values = {"peak_allocated_gib": gib(torch.cuda.max_memory_allocated(self._device)),
                      "peak_reserved_gib": gib(torch.cuda.max_memory_reserved(self._device))}
            torch.cuda.reset_peak_memory_stats(self._device)
        else:
            values = {"cpu_rss_gib": gib(current_rss_bytes()), "cpu_peak_rss_gib": gib(peak_rss_bytes())}
        for key, value in values.items():
            self.run_peak[key] = max(self.run_peak.get(key, 0.0), value)
        return values

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measuring = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measuring = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self._boundary.passed(trainer) or step % max(trainer.log_every_n_steps, 1):
            return
        values = self._window()
        self.windows.append({"step": step, **{k: round(v, 4) for k, v in values.items()}})
        log_metrics(trainer, {f"memory/{k}": v for k, v in values.items()})

    def _rank_peak(self, trainer: L.Trainer) -> dict:
        return {"rank": trainer.global_rank, "device": str(self._device or torch.device("cpu")),
                "host": socket.gethostname(), "step": trainer.global_step,
                "run_peak": {k: round(v, 4) for k, v in self.run_peak.items()}}

    def _gather(self, trainer: L.Trainer, collective: bool) -> list[dict]:
        """Every rank's peak, on every rank. `collective` is false where other processes may not be here (an
        exception on one of them): then only this rank's own is known."""
        mine = self._rank_peak(trainer)
        if not collective or trainer.world_size == 1 or not torch.distributed.is_initialized():
            return [mine]
        ranks: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(ranks, mine)
        return ranks

    def _write(self, trainer: L.Trainer, stage: str, collective: bool = True) -> None:
        if not self._measuring:
            return
        self._window()
        ranks = self._gather(trainer, collective)
        if not trainer.is_global_zero:
            return
        run_peak: dict[str, float] = {}
        for rank in ranks:
            for key, value in rank["run_peak"].items():
                run_peak[key] = max(run_peak.get(key, 0.0), value)
        device = self._device or torch.device("cpu")
        report = {
            "stage": stage,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if self.on_cuda else "cpu",
            "measure": ("torch.cuda max_memory_allocated / max_memory_reserved" if self.on_cuda
                        else "CPU run: peak resident set size of the process (not GPU memory)"),
            "run_peak": run_peak,
            "ranks": ranks,
            "windows": self.windows,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # A `nextai validate` in a run directory keeps the training run's file: its own goes beside it.
        name = self.filename if stage == "fit" else self.filename.replace(".json", f"-{stage}.json")
        write_json(run_dir(trainer) / name, report)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "fit")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.training and trainer.state.fn == "validate":
            self._write(trainer, "validate")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._write(trainer, f"interrupted by {type(exception).__name__}", collective=False)

    def state_dict(self) -> dict:
        return {"run_peak": self.run_peak, "windows": self.windows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.run_peak = dict(state_dict.get("run_peak", {}))
        self.windows = list(state_dict.get("windows", []))
