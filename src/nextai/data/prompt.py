"""How examples are written for the model, defined once: the Alpaca prompt (Taori et al. 2023), with and without an
input, and `PromptFormat`, a run's renderer for every record format (Alpaca, chat template, prompt/completion)."""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from nextai.data.chat import ChatTemplate
from nextai.data.records import Message, Record, record_format
from nextai.data.sources.conversation import transcript
from nextai.errors import NextaiError
from nextai.rundir import PROMPT_FORMAT_FILE

PROMPT_WITH_INPUT: Final = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT: Final = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The text the model reads before its response; the response follows it directly."""
    if input.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


# ------------------------------------------------------------------------------------ the run's prompt format
RenderedText = tuple[str, list[tuple[int, int]], bool]  # text, trained character spans, whether the tokenizer adds BOS


@dataclass(frozen=True)
class PromptFormat:
    """How a run writes its examples for the model, shared by training, `evaluate`, `serve` and `chat`: the record
    formats it trained on and, for conversations, the chat template. Recorded in the run (`prompt_format.json`)
    so a model is queried at inference in the format it learned."""

    formats: tuple[str, ...] = ("alpaca",)  # alpaca, messages, prompt_completion: what the training records were
    chat_template: ChatTemplate | None = None  # set when `messages` is among them

    # ---------------------------------------------------------------------------------------- training
    def render(self, tokenizer, record: Record) -> RenderedText:
        """A record as the text the model reads, the spans of it that train, and whether the tokenizer should add
        its special tokens (BOS) itself: Alpaca and prompt/completion text yes, a chat template writes its own."""
        format = record_format(record)
        if format == "alpaca":
            prompt = alpaca_prompt(record["instruction"], record["input"])
            return prompt + record["output"], [(len(prompt), len(prompt) + len(record["output"]))], True
        if format == "prompt_completion":
            prompt = record["prompt"]
            return prompt + record["completion"], [(len(prompt), len(prompt) + len(record["completion"]))], True
        if self.chat_template is None:
            raise NextaiError("conversation records need a chat template (data.chat_template)")
        text, spans = self.chat_template.spans(tokenizer, record["messages"])
        return text, spans, False

    # ---------------------------------------------------------------------------------------- inference
    @property
    def chat(self) -> bool:
        return self.chat_template is not None

    def prompt(self, tokenizer, messages: Sequence[Message]) -> str:
        """The text that asks the model for the next assistant turn of `messages`: the chat template when the run
        trained on conversations, else the Alpaca prompt (the last user turn as the instruction, the earlier turns
        as the input, as the report flattened conversations) or, for prompt/completion runs, the user's text."""
        if self.chat_template is not None:
            return self.chat_template.render(tokenizer, messages, add_generation_prompt=True)
        turns = [m for m in messages if m["role"] != "system"]
        if not turns or turns[-1]["role"] != "user":
            raise NextaiError("the conversation must end with a user turn")
        if self.formats == ("prompt_completion",):
            return turns[-1]["content"]
        system = " ".join(m["content"].strip() for m in messages if m["role"] == "system" and m["content"].strip())
        history = [m["content"] for m in turns[:-1]]
        context = "\n\n".join(part for part in (system, transcript(history, last_speaker="Assistant")
                                                if history else "") if part)
        return alpaca_prompt(turns[-1]["content"], context)

    def stop_tokens(self, tokenizer) -> list[int]:
        """Token ids that end a reply: EOS, and the chat template's end-of-turn token."""
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        if self.chat_template is not None:
            end = tokenizer.convert_tokens_to_ids(self.chat_template.end_of_turn)
            if end is not None and end != tokenizer.unk_token_id and end not in ids:
                ids.append(end)
        return ids

    # ---------------------------------------------------------------------------------------- the record
    def to_dict(self) -> dict:
        return {"formats": list(self.formats), "chat_template": asdict(self.chat_template) if self.chat else None}

    @classmethod
    def from_dict(cls, data: dict) -> "PromptFormat":
        template = data.get("chat_template")
        return cls(tuple(data.get("formats") or ("alpaca",)), ChatTemplate(**template) if template else None)

    def save(self, directory: str | Path) -> Path:
        from nextai.atomic import write_json

        path = Path(directory) / PROMPT_FORMAT_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "PromptFormat | None":
        """The format recorded in `directory` (a run or adapter directory), or None when it holds none."""
        path = Path(directory) / PROMPT_FORMAT_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError) as err:
            raise NextaiError(f"{path}: not a nextai prompt format ({err})") from None

    def describe(self) -> str:
        if self.chat_template is None:
            return " + ".join(self.formats)
        return f"{' + '.join(self.formats)}, chat template {self.chat_template.name} (turns end with " \
               f"{self.chat_template.end_of_turn})"
