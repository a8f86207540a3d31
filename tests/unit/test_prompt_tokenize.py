"""Prompt construction, prompt masking, EOS and truncation on fixed examples with the tiny tokenizer."""

from nextai.data.prompt import alpaca_prompt
from nextai.data.tokenize import IGNORE_INDEX, has_labels, tokenize_example


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


def test_example_whose_prompt_fills_the_cutoff_has_no_labels(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "word " * 200, "", "answer", cutoff_len=32,
                               train_on_inputs=False, add_eos_token=True)
    assert not has_labels(example)
