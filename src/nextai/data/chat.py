"""Chat templates: the tokenizer's own, or a named one from `TEMPLATES` when it has none; which text of a rendered
conversation the assistant wrote (what trains); the token that ends an assistant turn (where generation stops).

Rendering is transformers' `apply_chat_template` (Jinja, with the tokenizer's special tokens), so training, `serve`
and `chat` read exactly the text the template makes.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from nextai.data.records import Message
from nextai.errors import NextaiError

AUTO = "auto"  # the tokenizer's own template
# Named templates for tokenizers that have none. Each gives its Jinja text and the text of the token that ends an
# assistant turn ({eos} is the tokenizer's EOS).
TEMPLATES: dict[str, tuple[str, str]] = {
    # Meta's LLaMA-2-chat format (as transformers shipped it for meta-llama/Llama-2-*-chat-hf).
    "llama-2-chat": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}",
        "{eos}",
    ),
    # ChatML (OpenAI's, used by SmolLM2, Qwen, Hermes): needs <|im_start|> and <|im_end|> in the vocabulary.
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "<|im_end|>",
    ),
}
PROBE = (Message(role="user", content="nextai-probe-question"), Message(role="assistant", content="nextai-probe-answer"))


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template as a run uses it: its name (`tokenizer` for the tokenizer's own), its Jinja text, and the
    text of the token that ends an assistant turn."""

    name: str
    source: str
    end_of_turn: str

    def render(self, tokenizer, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(list(messages), chat_template=self.source, tokenize=False,
                                                 add_generation_prompt=add_generation_prompt)
        except Exception as err:  # Jinja's raise_exception and template errors: the template's own message
            raise NextaiError(f"chat template {self.name}: {err}") from None

    def spans(self, tokenizer, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the (start, end) character spans the assistant wrote: each assistant
        turn's content and the end-of-turn token that follows it (the text between, such as a space, included)."""
        text = self.render(tokenizer, messages)
        spans, cursor = [], 0
        for index, message in enumerate(messages):
            if message["role"] != "assistant" or not message["content"].strip():
                continue
            # Start the search after the prompt of this turn when the template renders append-only (most do), so
            # a reply that repeats the user's words is found in the right place.
            prompt = self.render(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
            if text.startswith(prompt) and len(prompt) >= cursor:
                cursor = len(prompt)
            content = message["content"].strip()
            start = text.find(content, cursor)
            if start < 0:
                raise NextaiError(f"chat template {self.name}: assistant turn {index} does not appear in the "
                                  f"rendered conversation; the template rewrites replies, so nextai cannot tell "
                                  f"which tokens to train")
            end = start + len(content)
            closing = text.find(self.end_of_turn, end)
            if closing < 0 or text[end:closing].strip():
                raise NextaiError(f"chat template {self.name}: no {self.end_of_turn!r} right after assistant turn "
                                  f"{index}; set data.chat_template to a template that ends turns with one")
            spans.append((start, closing + len(self.end_of_turn)))
            cursor = closing + len(self.end_of_turn)
        return text, spans


def special_tokens(tokenizer) -> list[str]:
    """Every special or added token's text, longest first (so `<|im_end|>` wins over a shorter prefix)."""
    added = [token.content for token in tokenizer.added_tokens_decoder.values()]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def end_of_turn_token(tokenizer, source: str, name: str) -> str:
    """The first special token the template writes after an assistant's reply (`<|im_end|>`, `</s>`, ...)."""
    template = ChatTemplate(name, source, end_of_turn="")
    text = template.render(tokenizer, PROBE)
    after = text[text.index(PROBE[1]["content"]) + len(PROBE[1]["content"]):]
    found = [(after.find(token), token) for token in special_tokens(tokenizer) if token and token in after]
    if not found:
        raise NextaiError(f"chat template {name}: it writes no special token after an assistant reply, so a reply "
                          f"would have no end; set data.chat_template to one of {', '.join(TEMPLATES)}")
    return min(found)[1]


def resolve_chat_template(tokenizer, choice: str = AUTO, tokenizer_name: str = "the tokenizer") -> ChatTemplate:
    """The template a run renders conversations with: the tokenizer's own (`auto`), or a named one."""
    if choice == AUTO:
        source = tokenizer.chat_template
        if isinstance(source, dict):  # tokenizers with several named templates: the default one
            source = source.get("default")
        if not source:
            raise NextaiError(f"{tokenizer_name} has no chat template: set data.chat_template to one of "
                              f"{', '.join(TEMPLATES)}")
        return ChatTemplate("tokenizer", source, end_of_turn_token(tokenizer, source, "of the tokenizer"))
    if choice not in TEMPLATES:
        raise NextaiError(f"data.chat_template: unknown template '{choice}'; expected auto (the tokenizer's own) or "
                          f"one of {', '.join(TEMPLATES)}")
    source, end = TEMPLATES[choice]
    end = end.format(eos=tokenizer.eos_token)
    vocabulary = tokenizer.get_vocab()
    missing = [token for token in ("<|im_start|>", "<|im_end|>") if token in source and token not in vocabulary]
    if missing:
        raise NextaiError(f"data.chat_template {choice}: {tokenizer_name} has no {' or '.join(missing)} token; "
                          f"choose a template written in its own tokens (llama-2-chat uses BOS and EOS)")
    return ChatTemplate(choice, source, end)
