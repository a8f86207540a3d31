"""The data side: records, the prompt, tokenization, sampling and the LightningDataModule.

Needs a tokenizer, never the model. `AlpacaSource` and `DatasetSource` (the names configs give as
`class_path: nextai.data.DatasetSource`) are imported on first use, so the samplers and the batch arithmetic
load without `datasets` and transformers."""

import importlib

_LAZY = {"AlpacaSource": "nextai.data.dataset", "DatasetSource": "nextai.data.dataset"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
