"""How a loaded model is asked at inference: the run's `PromptFormat` found from what was loaded, applied to a
conversation and tokenized exactly as training tokenized it, with the tokens and texts that end a reply.

One place for `serve`'s OpenAI routes, `chat` and `evaluate` (HELM's `/process` keeps its raw prompts), so a model
is never queried in a format it was not trained on:

| loaded | format |
|---|---|
| an adapter directory | its `prompt_format.json` (nextai writes one into every adapter), else Alpaca (old runs) |
| a checkpoint | the `prompt_format.json` of the run that wrote it |
| the base alone | the base directory's `prompt_format.json` (a merged export), else the tokenizer's own chat template (an
  instruct model, a GGUF export), else the text as it is |
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nextai.data.chat import AUTO, resolve_chat_template
from nextai.data.prompt import PromptFormat
from nextai.data.records import Message
from nextai.errors import NextaiError
from nextai.eval.generate import encode

log = logging.getLogger(__name__)

RAW = PromptFormat(("prompt_completion",))  # the user's text as it is, with the tokenizer's special tokens
ALPACA = PromptFormat()


@dataclass(frozen=True)
class InferencePrompt:
    """A run's prompt format bound to its tokenizer: conversation in, token ids out."""

    format: PromptFormat
    tokenizer: object
    source: str  # where the format came from, for logs and result files

    def ids(self, messages: Sequence[Message]) -> list[int]:
        """The tokens that ask for the next assistant turn of `messages`. A chat template writes its own special
        tokens (BOS where it wants one); the Alpaca prompt and raw text get the tokenizer's, as in training."""
        text = self.format.prompt(self.tokenizer, list(messages))
        return encode(self.tokenizer, text, add_special_tokens=not self.format.chat)

    def text_ids(self, text: str) -> list[int]:
        """A bare prompt (`/v1/completions`, `chat --prompt`) as the user's one turn."""
        return self.ids([Message(role="user", content=text)])

    def stop_token_ids(self) -> tuple[int, ...]:
        """Tokens that end a reply besides EOS: the chat template's end of turn."""
        eos = self.tokenizer.eos_token_id
        return tuple(t for t in self.format.stop_tokens(self.tokenizer) if t != eos)

    def describe(self) -> str:
        return f"{self.format.describe()} ({self.source})"


def weights_directory(adapter: str | None, ckpt_path: str | None, run_directory: Path) -> Path | None:
    """Where the loaded LoRA weights' prompt format is recorded: the adapter directory, or the run directory of a
    checkpoint (`<run>/checkpoints/x.ckpt`, else the configured run); None for the base alone."""
    if adapter is not None:
        return Path(adapter)
    if ckpt_path is not None:
        owner = Path(ckpt_path).resolve().parent.parent
        return owner if PromptFormat.load(owner) is not None else Path(run_directory)
    return None


def find_prompt_format(tokenizer, adapter: str | None, ckpt_path: str | None, run_directory: Path,
                       base_directory: str | Path | None) -> InferencePrompt:
    """The format the loaded weights were trained with (see the module docstring), logged."""
    found = _find(tokenizer, adapter, ckpt_path, Path(run_directory), base_directory)
    log.info("prompt format: %s", found.describe())
    return found


def _find(tokenizer, adapter, ckpt_path, run_directory, base_directory) -> InferencePrompt:
    directory = weights_directory(adapter, ckpt_path, run_directory)
    if directory is not None:
        recorded = PromptFormat.load(directory)
        if recorded is not None:
            return InferencePrompt(recorded, tokenizer, f"recorded in {directory}")
        return InferencePrompt(ALPACA, tokenizer, f"none recorded in {directory}: Alpaca, the report's prompt")
    if base_directory is not None and Path(base_directory).is_dir():
        recorded = PromptFormat.load(base_directory)
        if recorded is not None:
            return InferencePrompt(recorded, tokenizer, f"recorded in {base_directory}")
    if tokenizer.chat_template:
        try:
            template = resolve_chat_template(tokenizer, AUTO)
        except NextaiError as err:
            log.warning("the tokenizer's chat template is not usable (%s): prompts go to the model as they are", err)
        else:
            return InferencePrompt(PromptFormat(("messages",), template), tokenizer, "the tokenizer's chat template")
    return InferencePrompt(RAW, tokenizer, "the base alone, no chat template: text as it is")
