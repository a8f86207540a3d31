"""How a loaded model is asked: which prompt format is found for what was loaded, the tokens it gives (special
tokens as training had them), the exported Alpaca chat template rendering exactly what training rendered."""

import pytest

from nextai.data.chat import resolve_chat_template
from nextai.data.prompt import PromptFormat
from nextai.eval.chat_templates import alpaca_chat_template, export_chat_template
from nextai.eval.prompting import ALPACA, RAW, InferencePrompt, find_prompt_format

CONVERSATIONS = [
    [{"role": "user", "content": "Name a color."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}],
    [{"role": "system", "content": "Be brief."}, {"role": "system", "content": " Really. "},
     {"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello. "},
     {"role": "user", "content": "Name a color."}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
     {"role": "assistant", "content": "d"}, {"role": "user", "content": "Name a color."}],
    [{"role": "system", "content": "   "}, {"role": "user", "content": "Hi"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_the_exported_alpaca_template_renders_what_training_renders(tiny_tokenizer, messages):
    rendered = tiny_tokenizer.apply_chat_template(messages, chat_template=alpaca_chat_template(), tokenize=False,
                                                  add_generation_prompt=True)
    assert rendered == PromptFormat().prompt(tiny_tokenizer, messages)


def test_the_exported_alpaca_template_ends_replies_with_eos(tiny_tokenizer):
    from nextai.data.chat import end_of_turn_token

    answered = [*CONVERSATIONS[0], {"role": "assistant", "content": "Red."}]
    rendered = tiny_tokenizer.apply_chat_template(answered, chat_template=alpaca_chat_template(), tokenize=False)
    assert rendered.endswith("### Response:\nRed.</s>")
    assert end_of_turn_token(tiny_tokenizer, alpaca_chat_template(), "alpaca") == "</s>"
    assert export_chat_template(RAW) is None and export_chat_template(ALPACA) == alpaca_chat_template()


def test_alpaca_prompts_get_bos_and_chat_templates_write_their_own(tiny_tokenizer):
    alpaca = InferencePrompt(ALPACA, tiny_tokenizer, "test").text_ids("Name a color.")
    assert alpaca[0] == tiny_tokenizer.bos_token_id and alpaca.count(tiny_tokenizer.bos_token_id) == 1
    llama2 = InferencePrompt(PromptFormat(("messages",), resolve_chat_template(tiny_tokenizer, "llama-2-chat")),
                             tiny_tokenizer, "test").text_ids("Name a color.")
    assert llama2[0] == tiny_tokenizer.bos_token_id and llama2.count(tiny_tokenizer.bos_token_id) == 1
    raw = InferencePrompt(RAW, tiny_tokenizer, "test")
    assert raw.text_ids("The sky is") == tiny_tokenizer("The sky is").input_ids and raw.stop_token_ids() == ()


def test_smollm2_chatml_prompts_have_no_bos_and_stop_at_im_end(smollm2_tokenizer):
    prompt = InferencePrompt(PromptFormat(("messages",), resolve_chat_template(smollm2_tokenizer)),
                             smollm2_tokenizer, "test")
    ids = prompt.text_ids("What is the capital of France?")
    text = smollm2_tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert ids == smollm2_tokenizer(text, add_special_tokens=False).input_ids
    im_end = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert prompt.format.stop_tokens(smollm2_tokenizer) == [im_end]  # SmolLM2's EOS is its end of turn
    assert smollm2_tokenizer.eos_token_id == im_end and prompt.stop_token_ids() == ()  # nothing beyond EOS


def test_the_format_comes_from_what_was_loaded(tiny_tokenizer, smollm2_tokenizer, tmp_path):
    chat = PromptFormat(("messages",), resolve_chat_template(tiny_tokenizer, "llama-2-chat"))
    adapter, run, merged = tmp_path / "adapter", tmp_path / "run", tmp_path / "merged"
    for directory in (adapter, run, merged, run / "checkpoints"):
        directory.mkdir(parents=True)
    assert find_prompt_format(tiny_tokenizer, str(adapter), None, run, None).format == ALPACA  # old adapters
    chat.save(adapter)
    assert find_prompt_format(tiny_tokenizer, str(adapter), None, run, None).format == chat
    chat.save(run)  # a checkpoint: the run that wrote it
    assert find_prompt_format(tiny_tokenizer, None, str(run / "checkpoints" / "last.ckpt"), tmp_path, None).format \
        == chat
    # the base alone: a merged export's record, else the tokenizer's own template, else the text as it is
    ALPACA.save(merged)
    assert find_prompt_format(tiny_tokenizer, None, None, run, merged).format == ALPACA
    assert find_prompt_format(tiny_tokenizer, None, None, run, tmp_path / "nothing").format == RAW
    found = find_prompt_format(smollm2_tokenizer, None, None, run, None)
    assert found.format.chat and found.source == "the tokenizer's chat template"
