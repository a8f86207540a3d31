"""Alpaca records to training examples: prompt + response tokens, prompt masked, EOS added, cut at cutoff_len."""

import hashlib
import json

from nextai.data.prompt import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, alpaca_prompt
from nextai.errors import NextaiError, first_line

IGNORE_INDEX = -100  # label value the loss skips (torch's CrossEntropyLoss default)
TOKENIZE_VERSION = "2"  # bump when the tokenization below changes (2: the `truncated` column)


def load_tokenizer(name_or_path: str):
    """The base model's tokenizer, right-padded; LLaMA-2 has no pad token, so pad with <unk> (or EOS)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise NextaiError(f"cannot load tokenizer '{name_or_path}': {first_line(err)}") from None
    if not tokenizer.is_fast:
        raise NextaiError(f"tokenizer '{name_or_path}' is not a fast tokenizer; nextai needs offsets to mask prompts")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever the tokenizer would encode any text differently (not with its current truncation or
    padding settings, which each call sets)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    digest.update(f"{tokenizer.bos_token_id}/{tokenizer.eos_token_id}/{tokenizer.pad_token_id}".encode())
    return digest.hexdigest()[:16]


def template_fingerprint() -> str:
    return hashlib.sha256((PROMPT_WITH_INPUT + PROMPT_NO_INPUT + TOKENIZE_VERSION).encode()).hexdigest()[:16]


def tokenize_example(tokenizer, instruction: str, input: str, output: str, cutoff_len: int,
                     train_on_inputs: bool, add_eos_token: bool) -> dict:
    """`input_ids`, `labels` and `truncated` for one record.

    The whole text (prompt + output) is tokenized at once, so tokens are exactly those the model would see;
    with `train_on_inputs` false, every token that starts inside the prompt (BOS included) gets label -100.
    With `add_eos_token` the EOS is part of the example: an example whose tokens, EOS included, fit in `cutoff_len`
    is kept whole and ends with EOS; a longer one is `truncated` to its first `cutoff_len` tokens and gets no EOS
    (a cut response must not teach the model to stop). So a text of exactly `cutoff_len` tokens is cut by its EOS,
    as in alpaca-lora and TRL; without `add_eos_token` it is kept whole.
    """
    prompt = alpaca_prompt(instruction, input)
    text = prompt + output
    # Untruncated, so that "cut" is decided by the real length (verbose=False: a long record is no error here).
    encoded = tokenizer(text, return_offsets_mapping=True, verbose=False)
    input_ids = list(encoded["input_ids"])
    starts = [start for start, _ in encoded["offset_mapping"]]
    if add_eos_token and input_ids[-1] != tokenizer.eos_token_id:
        input_ids.append(tokenizer.eos_token_id)
        starts.append(len(text))
    truncated = len(input_ids) > cutoff_len
    if truncated:
        input_ids, starts = input_ids[:cutoff_len], starts[:cutoff_len]
    if train_on_inputs:
        labels = list(input_ids)
    else:
        labels = [IGNORE_INDEX if start < len(prompt) else token for token, start in zip(input_ids, starts)]
    return {"input_ids": input_ids, "labels": labels, "truncated": truncated}


def tokenize_batch(batch: dict[str, list], tokenizer, cutoff_len: int, train_on_inputs: bool,
                   add_eos_token: bool) -> dict[str, list]:
    """`datasets.map(batched=True)` form of `tokenize_example`, adding `length` for length grouping."""
    out = {"input_ids": [], "labels": [], "truncated": [], "length": []}
    for instruction, input, output in zip(batch["instruction"], batch["input"], batch["output"]):
        example = tokenize_example(tokenizer, instruction, input, output, cutoff_len, train_on_inputs, add_eos_token)
        for key in ("input_ids", "labels", "truncated"):
            out[key].append(example[key])
        out["length"].append(len(example["input_ids"]))
    return out


def has_labels(example: dict) -> bool:
    """An example whose every label is masked (its prompt filled the cutoff) teaches nothing."""
    return any(label != IGNORE_INDEX for label in example["labels"][1:])
