"""The run's prompt format as a Jinja chat template, written into exports (the merged tokenizer, the GGUF file) so
that transformers' `apply_chat_template`, llama.cpp and Ollama ask an exported model the way it was trained, as
Unsloth's exports do. A chat run's template is its own; an Alpaca run's is `alpaca_chat_template()`, which renders
exactly what `PromptFormat.prompt` renders."""

import json

from nextai.data.prompt import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, PromptFormat


def _split(template: str, field: str) -> tuple[str, str]:
    before, _, after = template.partition("{" + field + "}")
    return before, after


def alpaca_chat_template() -> str:
    """Jinja for the Alpaca prompt: the last user turn is the instruction; the system prompt and the earlier turns,
    as a `User:`/`Assistant:` transcript, the input; an assistant reply after it is followed by EOS."""
    head_with, rest = _split(PROMPT_WITH_INPUT, "instruction")
    middle, tail_with = _split(rest, "input")
    head_without, tail_without = _split(PROMPT_NO_INPUT, "instruction")
    q = json.dumps  # a Jinja string literal (Jinja reads Python's escapes)
    return (
        "{%- set ns = namespace(system='', last=-1, history='') -%}"
        "{%- for m in messages if m['role'] == 'system' and m['content'].strip() -%}"
        "{%- set ns.system = ns.system + (' ' if ns.system else '') + m['content'].strip() -%}{%- endfor -%}"
        "{%- set turns = messages | selectattr('role', 'ne', 'system') | list -%}"
        "{%- for m in turns -%}{%- if m['role'] == 'user' -%}{%- set ns.last = loop.index0 -%}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if ns.last < 0 -%}{{ raise_exception('the conversation needs a user turn') }}{%- endif -%}"
        "{%- for m in turns[:ns.last] -%}"
        "{%- set speaker = 'Assistant' if (ns.last - 1 - loop.index0) % 2 == 0 else 'User' -%}"
        "{%- set ns.history = ns.history + ('\\n' if loop.index0 else '') + speaker + ': ' + m['content'].strip() -%}"
        "{%- endfor -%}"
        "{%- set context = ns.system + ('\\n\\n' if ns.system and ns.history else '') + ns.history -%}"
        "{%- if context.strip() -%}"
        f"{{{{ {q(head_with)} + turns[ns.last]['content'] + {q(middle)} + context + {q(tail_with)} }}}}"
        "{%- else -%}"
        f"{{{{ {q(head_without)} + turns[ns.last]['content'] + {q(tail_without)} }}}}"
        "{%- endif -%}"
        "{%- for m in turns[ns.last + 1:] if m['role'] == 'assistant' -%}{{ m['content'] + eos_token }}{%- endfor -%}"
    )


def export_chat_template(prompt_format: PromptFormat) -> str | None:
    """The chat template an export should carry, or None to keep the base's (a prompt/completion run has none)."""
    if prompt_format.chat_template is not None:
        return prompt_format.chat_template.source
    if "alpaca" in prompt_format.formats:
        return alpaca_chat_template()
    return None
