"""What trains, per format, on the tiny tokenizer (LLaMA-style, BOS added, no chat template) and on SmolLM2's real
one (byte-level BPE, no BOS, its own ChatML template): the decoded labels are exactly the responses with their end
token, nothing of the prompts, system turns or user turns."""

import pytest

from nextai.data.chat import resolve_chat_template
from nextai.data.dataset import DatasetSource
from nextai.data.prompt import PromptFormat
from nextai.data.tokenize import IGNORE_INDEX, tokenize_record
from nextai.errors import NextaiError

CONVERSATION = {"messages": [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 is 4."},
    {"role": "user", "content": "Repeat what you said: 2 + 2 is 4."},  # the reply's words in a user turn
    {"role": "assistant", "content": "I said that 2 + 2 is 4."},
], "source": "t"}


def trained_text(tokenizer, example) -> str:
    ids = [token for token, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    return tokenizer.decode(ids, skip_special_tokens=False)


def trained_runs(tokenizer, example) -> list[str]:
    """Each stretch of consecutive trained tokens, decoded on its own (one per reply)."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [tokenizer.decode(run, skip_special_tokens=False).strip() for run in runs]


def chat_format(tokenizer, choice):
    return PromptFormat(("messages",), resolve_chat_template(tokenizer, choice))


@pytest.fixture(params=["tiny", "smollm2"])
def case(request):
    """(tokenizer, chat template choice, what separates a reply from its end token)"""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_tokenizer"), "llama-2-chat", " "
    return request.getfixturevalue("smollm2_tokenizer"), "auto", ""


def test_every_assistant_turn_and_its_end_token_train_and_nothing_else(case):
    tokenizer, choice, gap = case
    prompt_format = chat_format(tokenizer, choice)
    end = prompt_format.chat_template.end_of_turn
    example = tokenize_record(tokenizer, CONVERSATION, prompt_format, 512, train_on_inputs=False, add_eos_token=True)
    replies = [m["content"] for m in CONVERSATION["messages"] if m["role"] == "assistant"]
    assert trained_runs(tokenizer, example) == [f"{r}{gap}{end}" for r in replies]
    everything = tokenize_record(tokenizer, CONVERSATION, prompt_format, 512, train_on_inputs=True, add_eos_token=True)
    assert everything["labels"] == everything["input_ids"]


@pytest.mark.parametrize("fixture", ["tiny_tokenizer", "smollm2_tokenizer"])
def test_alpaca_and_prompt_completion_train_the_response_and_eos(request, fixture):
    tokenizer = request.getfixturevalue(fixture)
    plain = PromptFormat(("alpaca", "prompt_completion"))
    alpaca = {"instruction": "Name a color.", "input": "", "output": "Red.", "source": "t"}
    example = tokenize_record(tokenizer, alpaca, plain, 512, False, True)
    assert trained_text(tokenizer, example).strip() == f"Red.{tokenizer.eos_token}"
    pair = {"prompt": "The sky is", "completion": " blue.", "source": "t"}
    example = tokenize_record(tokenizer, pair, plain, 512, False, True)
    assert trained_text(tokenizer, example).strip() == f"blue.{tokenizer.eos_token}"
    # SmolLM2 adds no BOS: the first token is the prompt's own text, the tiny tokenizer's is BOS
    assert (example["input_ids"][0] == tokenizer.bos_token_id) is (fixture == "tiny_tokenizer")


@pytest.mark.parametrize("name", ["messages", "sharegpt"])
def test_bundled_conversations_train_exactly_their_replies_on_the_real_tokenizer(smollm2_tokenizer, name):
    prompt_format = chat_format(smollm2_tokenizer, "auto")
    for record in DatasetSource(f"bundled:chat/{name}.jsonl").load():
        example = tokenize_record(smollm2_tokenizer, record, prompt_format, 1024, False, True)
        replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert trained_text(smollm2_tokenizer, example) == "".join(f"{r}<|im_end|>" for r in replies)


def test_the_real_template_ends_turns_with_its_own_token_and_the_prompt_asks_for_a_reply(smollm2_tokenizer):
    prompt_format = chat_format(smollm2_tokenizer, "auto")
    assert prompt_format.chat_template.end_of_turn == "<|im_end|>"
    assert smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>") in prompt_format.stop_tokens(smollm2_tokenizer)
    prompt = prompt_format.prompt(smollm2_tokenizer, [{"role": "user", "content": "Hi"}])
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_alpaca_runs_are_asked_in_the_alpaca_prompt(tiny_tokenizer):
    prompt = PromptFormat().prompt(tiny_tokenizer, [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "Name a color."}])
    assert prompt.endswith("### Instruction:\nName a color.\n\n### Input:\nBe brief.\n\n### Response:\n")


def test_a_template_the_tokenizer_cannot_write_is_refused_in_one_line(tiny_tokenizer):
    with pytest.raises(NextaiError, match="data.chat_template chatml: tokenizer 'tiny' has no <|im_start|>"):
        resolve_chat_template(tiny_tokenizer, "chatml", "tokenizer 'tiny'")
    with pytest.raises(NextaiError, match="tokenizer 'tiny' has no chat template: set data.chat_template"):
        resolve_chat_template(tiny_tokenizer, "auto", "tokenizer 'tiny'")
    with pytest.raises(NextaiError, match="unknown template 'vicuna'"):
        resolve_chat_template(tiny_tokenizer, "vicuna")
