"""`nextai chat`: talk to a trained model in the terminal, as `litgpt chat`, `unsloth chat` or Axolotl's
`inference --chat` do: base + adapter (or a checkpoint, a merged export, a GGUF base), replies streamed token by
token in the run's prompt format and ended by its end-of-turn token, the conversation kept between turns.

    /reset          forget the conversation (the system prompt stays)
    /system TEXT    set the system prompt (alone: show it; `/system -` clears it)
    /show           print the conversation as the model reads it next
    /exit, Ctrl-D   leave; Ctrl-C stops a reply (and at the prompt leaves)

`--prompt TEXT` answers once and exits: the reply alone on standard output, logs on standard error.
"""

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from nextai.errors import NextaiError
from nextai.eval.generate import Completion, Decoding, context_length, generate
from nextai.eval.prompting import InferencePrompt

log = logging.getLogger(__name__)

HELP = ("/reset forgets the conversation, /system TEXT sets the system prompt (/system - clears it), /show prints "
        "what the model reads, /exit or Ctrl-D leaves; Ctrl-C stops a reply")
USER_PROMPT = ">>> "


@dataclass(frozen=True)
class Sampling:
    """How replies are drawn (LitGPT's `chat` defaults: temperature 0.8, top-k 50)."""

    max_new_tokens: int = 512
    temperature: float = 0.8  # 0: greedy
    top_k: int | None = 50
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise NextaiError(f"chat: --max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise NextaiError(f"chat: --temperature must be 0 or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise NextaiError(f"chat: --top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise NextaiError(f"chat: --top_k must be 0 or more, got {self.top_k}")


class Conversation:
    """The turns so far and the system prompt; renders them for the model, dropping the oldest turns when the
    conversation and a reply no longer fit the model's context."""

    def __init__(self, prompt: InferencePrompt, window: int | None, system: str | None = None) -> None:
        self.prompt = prompt
        self.window = window
        self.system = system or None
        self.turns: list[dict] = []

    def messages(self, turns: list[dict] | None = None) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + (self.turns if turns is None else turns)

    def ids_for(self, user_text: str, reply_tokens: int) -> list[int]:
        """The tokens asking for the reply to `user_text`; older turns are forgotten (and said so) while they do
        not fit with `reply_tokens` more."""
        turns = [*self.turns, {"role": "user", "content": user_text}]
        while True:
            ids = self.prompt.ids(self.messages(turns))
            if self.window is None or len(ids) + reply_tokens <= self.window or len(turns) == 1:
                break
            turns = turns[2:]
            log.warning("the conversation no longer fits the model's %d positions: the oldest exchange is forgotten",
                        self.window)
        if self.window is not None and len(ids) + reply_tokens > self.window:
            raise NextaiError(f"this message is {len(ids)} tokens; with --max_new_tokens {reply_tokens} it does not "
                              f"fit the model's {self.window} positions")
        self.turns = turns[:-1]
        return ids

    def add(self, user_text: str, reply: str) -> None:
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]

    def shown(self) -> str:
        """The conversation as the model reads it: through the chat template as it stands, or, for the Alpaca prompt
        (which needs a question), as the next question `…` would be asked."""
        if self.prompt.format.chat:
            return self.prompt.format.chat_template.render(self.prompt.tokenizer, self.messages())
        return self.prompt.format.prompt(self.prompt.tokenizer,
                                         self.messages([*self.turns, {"role": "user", "content": "…"}]))


class ChatSession:
    """One model, one conversation: `reply` streams the answer to a user message and remembers both."""

    def __init__(self, model, tokenizer, prompt: InferencePrompt, sampling: Sampling, system: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.conversation = Conversation(prompt, context_length(model), system)
        self.decoding = Decoding(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                                 top_k=sampling.top_k or None, top_p=sampling.top_p, stop=sampling.stop,
                                 stop_token_ids=prompt.stop_token_ids(), top_logprobs=0, seed=sampling.seed)

    def reply(self, text: str, on_text: Callable[[str], None]) -> Completion:
        ids = self.conversation.ids_for(text, self.sampling.max_new_tokens)
        [completion] = generate(self.model, self.tokenizer, [ids], self.decoding, batch_size=1,
                                on_text=lambda _, piece: on_text(piece))
        self.conversation.add(text, completion.text)
        return completion


def answer_once(session: ChatSession, text: str, out: TextIO) -> Completion:
    """`--prompt`: the reply alone, streamed, then a newline."""
    completion = session.reply(text, lambda piece: (out.write(piece), out.flush()))
    out.write("\n")
    out.flush()
    return completion


def interact(session: ChatSession, out: TextIO = sys.stdout, read: Callable[[str], str] = input) -> None:
    """The terminal loop (see the module docstring)."""
    while True:
        try:
            line = read(USER_PROMPT)
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if not command(session, text, out):
                return
            continue
        try:
            completion = session.reply(line, lambda piece: (out.write(piece), out.flush()))
        except KeyboardInterrupt:
            out.write("\n[reply stopped; not kept in the conversation]\n")
            out.flush()
            continue
        except NextaiError as err:
            out.write(f"[{err}]\n")
            continue
        out.write("\n" if completion.finish_reason != "length" else
                  f"\n[reply cut at --max_new_tokens {session.sampling.max_new_tokens}]\n")
        out.flush()


def command(session: ChatSession, text: str, out: TextIO) -> bool:
    """Carry out a /command; False to leave."""
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    conversation = session.conversation
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/reset":
        conversation.turns = []
        out.write("[conversation cleared]\n")
    elif name == "/system":
        if argument == "-":
            conversation.system = None
            out.write("[system prompt cleared]\n")
        elif argument:
            conversation.system = argument
            out.write("[system prompt set]\n")
        else:
            out.write(f"[system prompt: {conversation.system or '(none)'}]\n")
    elif name == "/show":
        out.write(conversation.shown() + "\n")
    else:
        out.write(f"[{HELP}]\n")
    out.flush()
    return True


def logs_to_stderr() -> None:
    """Keep standard output for the conversation: nextai's rich log handler writes to standard error."""
    from rich.console import Console
    from rich.logging import RichHandler

    for handler in logging.getLogger("nextai").handlers:
        if isinstance(handler, RichHandler):
            handler.console = Console(stderr=True)


def chat_run(trainer, module, adapter: str | None, ckpt_path: str | None, sampling: Sampling, system: str | None,
             prompt: str | None) -> None:
    """`NextaiTrainer.chat`: load the run's model on the trainer's device, then answer `prompt` or talk."""
    from pathlib import Path

    from nextai.eval.model import choose_weights, load_model

    logs_to_stderr()
    if prompt is not None and not prompt.strip():
        raise NextaiError("chat: --prompt is empty")
    run_directory = Path(trainer.default_root_dir)
    adapter, ckpt_path = choose_weights(adapter, ckpt_path, run_directory)
    loaded = load_model(module, trainer.strategy.root_device, adapter, ckpt_path, run_directory)
    session = ChatSession(loaded.model, loaded.tokenizer, loaded.prompt, sampling, system)
    if prompt is not None:
        answer_once(session, prompt, sys.stdout)
        return
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    weights = adapter or ckpt_path or "no adapter"
    print(f"nextai chat: {module.settings.base_model} + {weights}; prompt format {loaded.prompt.describe()}.\n{HELP}.",
          file=sys.stderr, flush=True)
    interact(session)
