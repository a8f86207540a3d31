"""Prompt construction, prompt masking, EOS and truncation on fixed examples with the tiny tokenizer."""

import pytest

from nextai.data.prompt import alpaca_prompt
from nextai.data.tokenize import ALPACA, IGNORE_INDEX, has_labels, tokenize_example, tokenize_records


def test_prompt_with_and_without_input():
    with_input = alpaca_prompt("Add the numbers.", "2 and 3")
    without = alpaca_prompt("Name a color.")
    assert with_input.endswith("### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n")
    assert "paired with an input" in with_input
    assert without.endswith("### Instruction:\nName a color.\n\n### Response:\n")
    assert "### Input" not in without and "paired with an input" not in without
    assert alpaca_prompt("Name a color.", "   ") == without  # blank input is no input


def test_prompt_tokens_are_masked_and_eos_is_learned(tiny_tokenizer):
    tok = tiny_tokenizer
    example = tokenize_example(tok, "Add the two numbers.", "2 and 3", "2 + 3 = 5.", cutoff_len=512,
                               train_on_inputs=False, add_eos_token=True)
    ids, labels = example["input_ids"], example["labels"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    learned = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    # Every learned position is a contiguous tail: the response and EOS, nothing of the prompt.
    assert learned == list(range(learned[0], len(ids)))
    assert tok.decode([ids[i] for i in learned], skip_special_tokens=False).strip() == "2 + 3 = 5.</s>"
    prompt_len = len(tok(alpaca_prompt("Add the two numbers.", "2 and 3"))["input_ids"])
    assert learned[0] == prompt_len
    assert all(labels[i] == ids[i] for i in learned)


def test_train_on_inputs_learns_everything(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "Name a color.", "", "Red.", cutoff_len=512,
                               train_on_inputs=True, add_eos_token=True)
    assert example["labels"] == example["input_ids"]


def test_no_eos_without_add_eos(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "Name a color.", "", "Red.", cutoff_len=512,
                               train_on_inputs=False, add_eos_token=False)
    assert tiny_tokenizer.eos_token_id not in example["input_ids"]


def test_truncation_cuts_at_cutoff_and_adds_no_eos(tiny_tokenizer):
    long_output = " ".join(["garden river planet"] * 40)
    full = tokenize_example(tiny_tokenizer, "Repeat.", "", long_output, cutoff_len=4096,
                            train_on_inputs=False, add_eos_token=True)
    cut = tokenize_example(tiny_tokenizer, "Repeat.", "", long_output, cutoff_len=64,
                           train_on_inputs=False, add_eos_token=True)
    assert len(full["input_ids"]) > 64
    assert len(cut["input_ids"]) == 64
    assert cut["input_ids"] == full["input_ids"][:64]  # the same tokens, cut
    assert cut["input_ids"][-1] != tiny_tokenizer.eos_token_id  # a cut response must not teach stopping
    assert has_labels(cut)
    assert cut["truncated"] and not full["truncated"]


TEXT_TOKENS = 63  # "Name a color." / "Red." in the Alpaca template with the tiny tokenizer, BOS included


@pytest.mark.parametrize("cutoff_len, length, ends_with_eos, truncated", [
    (TEXT_TOKENS + 1, TEXT_TOKENS + 1, True, False),  # the text and its EOS fill the cutoff exactly: kept whole
    (TEXT_TOKENS, TEXT_TOKENS, False, True),  # the text alone fills it: its EOS is what is cut
    (TEXT_TOKENS - 1, TEXT_TOKENS - 1, False, True),
])
def test_eos_at_the_cutoff_boundary(tiny_tokenizer, cutoff_len, length, ends_with_eos, truncated):
    text = tokenize_example(tiny_tokenizer, "Name a color.", "", "Red.", cutoff_len=4096, train_on_inputs=False,
                            add_eos_token=False)["input_ids"]
    assert len(text) == TEXT_TOKENS
    example = tokenize_example(tiny_tokenizer, "Name a color.", "", "Red.", cutoff_len=cutoff_len,
                               train_on_inputs=False, add_eos_token=True)
    ids = example["input_ids"]
    assert len(ids) == length and example["truncated"] is truncated
    assert (ids[-1] == tiny_tokenizer.eos_token_id) is ends_with_eos
    assert ids[:min(length, TEXT_TOKENS)] == text[:length]
    assert example["labels"][-1] == (tiny_tokenizer.eos_token_id if ends_with_eos else text[length - 1])


def test_without_eos_a_text_of_exactly_cutoff_len_is_not_cut(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "Name a color.", "", "Red.", cutoff_len=TEXT_TOKENS,
                               train_on_inputs=False, add_eos_token=False)
    assert len(example["input_ids"]) == TEXT_TOKENS and not example["truncated"]
    cut = tokenize_example(tiny_tokenizer, "Name a color.", "", "Red.", cutoff_len=TEXT_TOKENS - 1,
                           train_on_inputs=False, add_eos_token=False)
    assert cut["truncated"]


def test_batch_form_reports_length_and_truncation(tiny_tokenizer):
    records = [{"instruction": "Name a color.", "input": "", "output": "Red.", "source": "a"},
               {"instruction": "Repeat.", "input": "", "output": " ".join(["garden river planet"] * 40), "source": "b"}]
    out = tokenize_records(records, tiny_tokenizer, ALPACA, cutoff_len=TEXT_TOKENS + 1, train_on_inputs=False,
                           add_eos_token=True)
    assert out["length"] == [TEXT_TOKENS + 1, TEXT_TOKENS + 1] == [len(ids) for ids in out["input_ids"]]
    assert out["truncated"] == [False, True]  # same length, told apart by the untruncated length


def test_example_whose_prompt_fills_the_cutoff_has_no_labels(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "word " * 200, "", "answer", cutoff_len=32,
                               train_on_inputs=False, add_eos_token=True)
    assert not has_labels(example)
