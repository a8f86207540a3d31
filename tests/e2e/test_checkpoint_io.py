"""Checkpoint writes are atomic: a failure or a full disk leaves the previous file intact and no partial file;
retention keeps the newest checkpoints and never deletes the last good one."""

import errno
from pathlib import Path

import pytest
import torch

from nextai.checkpoint_io import AtomicCheckpointIO
from nextai.main import main
from nextai.errors import NextaiError

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(NextaiError, match=r"cannot write checkpoint .*last.ckpt: no space left on the device; "
                                          r"the previous last.ckpt is intact"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left behind


def test_an_interrupted_write_is_never_visible(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def torn_write(self, checkpoint, target, storage_options=None):
        Path(target).write_bytes(b"PK\x03\x04 torn")  # what a kill in the middle of the write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", torn_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_retention_keeps_the_newest(tmp_path):
    main(["fit", "--config", TINY, "--data.source", "bundled:alpaca_tiny.jsonl", "--data.cutoff_len", "128",
          "--trainer.max_steps", "7", "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.callbacks", '[{"class_path": "nextai.callbacks.RunCheckpoint", '
                                 '"init_args": {"every_n_train_steps": 2, "keep_last_n": 2}}]'])
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert names == ["epoch=0-step=4.ckpt", "epoch=0-step=6.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7
