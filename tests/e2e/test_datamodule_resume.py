"""The training sampler's resume position on the real data module (bundled samples, tiny tokenizer): applied
whichever comes first, the restored state or the training loader, and converted or refused for another process
count."""

from types import SimpleNamespace

import pytest

from nextai.callbacks import EpochPosition
from nextai.data.datamodule import InstructionDataModule
from nextai.errors import NextaiError


@pytest.fixture(autouse=True)
def tokenizer(tiny_model_dir):
    global TOKENIZER
    TOKENIZER = str(tiny_model_dir)


def datamodule(processes: int = 1, callbacks=()) -> InstructionDataModule:
    module = InstructionDataModule("bundled:alpaca_tiny.jsonl", tokenizer=TOKENIZER, cutoff_len=128, val_size=8,
                                   batch_size=4, micro_batch_size=1)
    if processes > 1:
        module.trainer = SimpleNamespace(global_rank=0, world_size=processes, callbacks=list(callbacks))
    module.prepare_data()
    module.setup("fit")
    return module


def position(module: InstructionDataModule, batches_done: int, processes: int = 1) -> dict:
    return {"epoch": 0, "batches_done": batches_done, "sampling": {**module._sampling(), "processes": processes}}


@pytest.mark.parametrize("state_first", [True, False], ids=["state-then-loader", "loader-then-state (FSDP)"])
def test_the_position_is_applied_in_either_order(state_first):
    full = list(datamodule().train_dataloader().batch_sampler)
    module = datamodule()
    if state_first:
        module.load_state_dict(position(module, 6))
        sampler = module.train_dataloader().batch_sampler
    else:
        sampler = module.train_dataloader().batch_sampler
        module.load_state_dict(position(module, 6))
    assert list(sampler) == full[6:]


def test_another_process_count_continues_the_same_plan():
    one = datamodule().train_dataloader().batch_sampler
    module = datamodule(processes=2, callbacks=[EpochPosition()])
    sampler = module.train_dataloader().batch_sampler
    module.load_state_dict(position(module, 8, processes=1))  # 8 on 1 process = 4 on each of 2
    assert list(sampler) == sampler.batches()[4:]
    assert sampler.batches()[4] == one.batches()[8]  # rank 0 goes on with the plan's 9th micro batch


def test_another_process_count_without_the_counter_callback_is_refused():
    module = datamodule(processes=2)
    module.train_dataloader()
    with pytest.raises(NextaiError, match="add the callback nextai.callbacks.EpochPosition"):
        module.load_state_dict(position(module, 8, processes=1))


def test_a_position_at_the_new_counts_epoch_end_is_refused():
    module = datamodule(processes=2, callbacks=[EpochPosition()])
    per_rank = len(module.train_dataloader().batch_sampler)
    with pytest.raises(NextaiError, match="resume on 1 process"):
        module.load_state_dict(position(module, 2 * per_rank, processes=1))
