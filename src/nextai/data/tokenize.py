"""Records to training examples: the text the prompt format renders, tokenized once, everything but the trained
spans masked, EOS added, cut at cutoff_len."""

import hashlib
import json

from nextai.data.prompt import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, PromptFormat
from nextai.data.records import AlpacaRecord, Record
from nextai.errors import NextaiError, first_line

IGNORE_INDEX = -100  # label value the loss skips (torch's CrossEntropyLoss default)
# Bump when the tokenization below changes (2: the `truncated` column; 3: trained spans by overlap, any format).
TOKENIZE_VERSION = "3"
ALPACA = PromptFormat()


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


def tokenize_record(tokenizer, record: Record, prompt_format: PromptFormat, cutoff_len: int, train_on_inputs: bool,
                    add_eos_token: bool) -> dict:
    """`input_ids`, `labels` and `truncated` for one record of any format.

    The whole text is tokenized at once, so tokens are exactly those the model would see. With `train_on_inputs`
    false, only tokens that overlap a trained span learn (the response; in a conversation, every assistant turn
    with its end-of-turn token); everything else, BOS included, gets label -100.
    With `add_eos_token` an Alpaca or prompt/completion example ends with EOS (a chat template writes its own turn
    ends): an example whose tokens, EOS included, fit in `cutoff_len` is kept whole and ends with EOS; a longer
    one is `truncated` to its first `cutoff_len` tokens and gets no EOS (a cut response must not teach the model
    to stop). So a text of exactly `cutoff_len` tokens is cut by its EOS, as in alpaca-lora and TRL; without
    `add_eos_token` it is kept whole.
    """
    text, spans, special = prompt_format.render(tokenizer, record)
    # Untruncated, so that "cut" is decided by the real length (verbose=False: a long record is no error here).
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=special, verbose=False)
    input_ids = list(encoded["input_ids"])
    trains = [any(start < end_span and end > start_span for start_span, end_span in spans)
              for start, end in encoded["offset_mapping"]]
    if add_eos_token and special and input_ids[-1] != tokenizer.eos_token_id:
        input_ids.append(tokenizer.eos_token_id)
        trains.append(bool(spans))
    truncated = len(input_ids) > cutoff_len
    if truncated:
        input_ids, trains = input_ids[:cutoff_len], trains[:cutoff_len]
    if train_on_inputs:
        labels = list(input_ids)
    else:
        labels = [token if trained else IGNORE_INDEX for token, trained in zip(input_ids, trains)]
    return {"input_ids": input_ids, "labels": labels, "truncated": truncated}


def tokenize_example(tokenizer, instruction: str, input: str, output: str, cutoff_len: int,
                     train_on_inputs: bool, add_eos_token: bool) -> dict:
    """`tokenize_record` for one Alpaca record."""
    record = AlpacaRecord(instruction=instruction, input=input, output=output, source="")
    return tokenize_record(tokenizer, record, ALPACA, cutoff_len, train_on_inputs, add_eos_token)


def tokenize_records(records: list[Record], tokenizer, prompt_format: PromptFormat, cutoff_len: int,
                     train_on_inputs: bool, add_eos_token: bool) -> dict[str, list]:
    """Columns of the tokenized set: `input_ids`, `labels`, `truncated`, `length` (for length grouping), `source`."""
    out = {"input_ids": [], "labels": [], "truncated": [], "length": [], "source": []}
    for record in records:
        example = tokenize_record(tokenizer, record, prompt_format, cutoff_len, train_on_inputs, add_eos_token)
        for key in ("input_ids", "labels", "truncated"):
            out[key].append(example[key])
        out["length"].append(len(example["input_ids"]))
        out["source"].append(record["source"])
    return out


def has_labels(example: dict) -> bool:
    """An example whose every label is masked (its prompt filled the cutoff) teaches nothing."""
    return any(label != IGNORE_INDEX for label in example["labels"][1:])
