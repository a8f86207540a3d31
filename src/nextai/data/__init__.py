"""The data side: records, the prompt, tokenization, sampling and the LightningDataModule.

Needs a tokenizer, never the model. `AlpacaSource` and `DatasetSource` (the names configs give as
`class_path: nextai.data.DatasetSource`) are imported on first use, so the samplers and the batch arithmetic
load without `datasets` and transformers."""

from nextai.lazy import lazy_exports

_EXPORTS = {"AlpacaSource": "nextai.data.dataset", "DatasetSource": "nextai.data.dataset"}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
