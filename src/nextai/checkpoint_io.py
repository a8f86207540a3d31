"""Checkpoint files written atomically: a kill or a full disk during a save leaves the previous file intact."""

import errno
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from nextai.atomic import atomic_path
from nextai.errors import NextaiError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint I/O, but each file is written beside its target, flushed to disk and renamed
    over it: readers (a resume, `--ckpt_path last`) only ever see a complete checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)
        except OSError as err:
            previous = f"; the previous {path.name} is intact" if path.exists() else ""
            reason = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise NextaiError(f"cannot write checkpoint {path}: {reason}{previous}") from None

    def remove_checkpoint(self, path) -> None:
        if os.path.exists(path):
            super().remove_checkpoint(path)
