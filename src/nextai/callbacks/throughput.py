"""`TokenThroughput`: real (non-pad) tokens per second and padding efficiency, per optimizer step window.

Lightning's ThroughputMonitor counts samples and a per-sample length; this counts the real tokens and the
slots of every micro batch (from the collator's `num_tokens`/`num_slots`, counted on the CPU), so the logged
rate is the one that matters for padded and packed batches alike, and it synchronizes the GPU only once per
logging window.
"""

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nextai.callbacks.boundary import StepBoundary
from nextai.callbacks.metrics import log_metrics


class TokenThroughput(Callback):
    """Logs `train/tokens_per_sec` (real tokens), `train/padding_efficiency` (real tokens / slots) and
    `train/step_time_s` every `log_every_n_steps` optimizer steps."""

    def __init__(self) -> None:
        self._tokens = 0
        self._slots = 0
        self._steps = 0
        self._t0: float | None = None
        self._boundary = StepBoundary()
        self._paused_at: float | None = None
        self.total_tokens = 0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._tokens += int(batch.get("num_tokens", 0))
        self._slots += int(batch.get("num_slots", 0))
        if not self._boundary.passed(trainer):
            return  # inside an accumulation window
        self._steps += 1
        if trainer.global_step % max(trainer.log_every_n_steps, 1):
            return
        self._sync(trainer)
        now = time.perf_counter()
        elapsed = now - self._t0
        world = trainer.world_size
        log_metrics(trainer, {
            "train/tokens_per_sec": self._tokens * world / elapsed,
            "train/padding_efficiency": self._tokens / max(self._slots, 1),
            "train/step_time_s": elapsed / self._steps,
        })
        self.total_tokens += self._tokens * world
        self._tokens = self._slots = self._steps = 0
        self._t0 = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None and self._paused_at is not None:
            self._t0 += time.perf_counter() - self._paused_at  # validation time is not training time
        self._paused_at = None
