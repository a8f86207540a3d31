"""Micro batches padded to their longest example, with token counts the throughput callback reads."""

import torch

from nextai.data.tokenize import IGNORE_INDEX


class PadCollator:
    """Right-pads `input_ids` (pad id), `labels` (-100) and builds `attention_mask`.

    Adds `num_tokens` (real tokens) and `num_slots` (tokens incl. padding) as plain ints, counted on the CPU so
    that logging them never waits for the GPU.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        longest = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.as_tensor(example["input_ids"])
            labels[row, :n] = torch.as_tensor(example["labels"])
            attention_mask[row, :n] = 1
        real = int(attention_mask.sum())
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                "num_tokens": real, "num_slots": input_ids.numel()}
