"""The data side: records, the prompt, tokenization, sampling and the LightningDataModule.

Needs a tokenizer, never the model.
"""

from nextai.data.dataset import AlpacaSource, DatasetSource

__all__ = ["AlpacaSource", "DatasetSource"]
