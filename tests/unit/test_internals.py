"""Every private Lightning and torch name nextai relies on still exists: an upgrade that removes one fails here,
naming it, instead of breaking a resume or a checkpoint later (`nextai.internals`)."""

import importlib

import lightning as L
import pytest
import torch

from nextai.callbacks import RunCheckpoint
from nextai.internals import PRIVATE_NAMES


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)


@pytest.fixture(scope="module")
def owners(tmp_path_factory) -> dict:
    checkpoint = RunCheckpoint(dirpath=str(tmp_path_factory.mktemp("ckpt")))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[checkpoint])
    return {"trainer": trainer, "trainer.fit_loop": trainer.fit_loop,
            "trainer.fit_loop.epoch_loop": trainer.fit_loop.epoch_loop, "model_checkpoint": checkpoint,
            "lightning_module": Tiny()}


@pytest.mark.parametrize("owner, name", PRIVATE_NAMES, ids=[f"{o}.{n}" for o, n in PRIVATE_NAMES])
def test_every_private_name_nextai_uses_still_exists(owners, owner, name):
    target = owners.get(owner) or importlib.import_module(owner)
    assert hasattr(target, name), f"{owner}.{name} is gone: update nextai.internals for this release"


def test_no_module_but_internals_touches_a_private_lightning_name():
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "src" / "nextai"
    names = {name for _, name in PRIVATE_NAMES}
    offenders = [f"{path.relative_to(source)}: {name}" for path in source.rglob("*.py") if path.name != "internals.py"
                 for name in names if f".{name}" in path.read_text()]
    assert not offenders, offenders
