"""Batched generation on the (4-bit) base + adapter, shared by `nextai evaluate`, `nextai serve` and `nextai chat`.

Greedy or sampled (temperature, top-k, top-p), stopped per row at EOS, at a stop token (a chat template's end of
turn) or at the first stop sequence, which is cut from the text (HELM's HTTP client does not cut it, so the server
must). Every returned token carries its text in context (the pieces join to exactly the completion), its
log-probability under the model (fp32 log-softmax of the raw logits, before temperature or top-k), and the most
likely alternatives at its position.

The decoding loop is ours rather than `model.generate`: `generate` fills settings left at their defaults from the
checkpoint's `generation_config.json` (LLaMA-2 ships top_p 0.9, temperature 0.6), and HELM's numbers need exactly
the settings each request names. The sampling warpers are transformers' own. Text can be streamed as it is made
(`on_text`): a piece is handed out once no stop sequence can begin in it, so the streamed pieces join to exactly
the returned text.
"""

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from nextai.errors import NextaiError

GREEDY_BELOW = 1e-5  # HELM sends temperature 1e-7 for "greedy"
CHALLENGE_TOP_K = 200  # the challenge's /process default; HELM never sends top_k, so its sampled runs used it
REPLACEMENT = "\ufffd"  # what decoding an incomplete UTF-8 byte sequence yields
ECHO_CHUNK = 512  # prompt positions scored at once when the prompt is echoed (bounds the fp32 logits)


@dataclass(frozen=True)
class Decoding:
    """What one generation call asks for (the same for every prompt of the call)."""

    max_new_tokens: int
    temperature: float = 0.0  # below GREEDY_BELOW: greedy
    top_k: int | None = None  # sample among the k most likely tokens (None: all)
    top_p: float = 1.0  # nucleus sampling
    stop: tuple[str, ...] = ()  # text that ends a completion (cut, not returned)
    stop_token_ids: tuple[int, ...] = ()  # tokens that end a completion besides EOS (a chat template's end of turn)
    top_logprobs: int = 1  # alternatives reported per token
    echo_prompt: bool = False  # also return the prompt's tokens (scored) before the completion
    seed: int | None = None  # sampling seed (None: a fresh random one)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass
class Token:
    text: str
    logprob: float
    top_logprobs: dict[str, float] = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    tokens: list[Token]
    logprob: float  # sum of the returned tokens' log-probabilities
    finish_reason: str  # "stop" (a stop sequence), "eos" (EOS or a stop token), or "length"
    prompt_tokens: int
    generated: int = 0  # tokens the model produced, the one that ended it (EOS, a stop token) included


Prompt = str | Sequence[int]  # text (encoded with the tokenizer's special tokens) or token ids as they are
TextCallback = Callable[[int, str], None]  # (index of the prompt, new text)


class GenerationCancelled(Exception):
    """Raised inside the decoding loop when the caller's `cancelled()` turns true (a request's deadline)."""


def encode(tokenizer, text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids as the model reads a prompt, no truncation: with the tokenizer's special tokens, so BOS first where
    the tokenizer adds one (LLaMA's does; SmolLM2's adds none); without them for text a chat template wrote, which
    holds its own."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def count_tokens(tokenizer, text: str) -> int:
    return len(encode(tokenizer, text))


def first_tokens_text(tokenizer, text: str, count: int) -> str:
    """The text of the first `count` tokens of `text` (a BOS the tokenizer adds counted, not returned)."""
    return decode(tokenizer, encode(tokenizer, text)[:count])


class Detokenizer:
    """Turns token ids, one at a time, into the text each adds in context: the pieces join to the decoded text.

    Decodes a short window (the previous token and the new ones) and emits text only once it ends in a complete
    character, so byte-fallback tokens of one character come out together and word-initial spaces are kept
    (text-generation-inference's scheme).
    """

    def __init__(self, tokenizer, context: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.ids = list(context)
        self.prefix = max(0, len(self.ids) - 1)
        self.read = len(self.ids)

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = decode(self.tokenizer, self.ids[self.prefix:self.read])
        after = decode(self.tokenizer, self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT) and after.startswith(before):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """The text still held back at the end (bytes of a character that never completed, shown as U+FFFD)."""
        if self.read == len(self.ids):
            return ""
        before = decode(self.tokenizer, self.ids[self.prefix:self.read])
        after = decode(self.tokenizer, self.ids[self.prefix:])
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):] if after.startswith(before) else ""


def token_texts(tokenizer, ids: Sequence[int]) -> dict[int, str]:
    """Each id's text as it reads after a plain word (word-initial spaces kept): the alternatives have no context
    of their own, and decoding a lone LLaMA token drops its leading space."""
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1:]
    anchor_text = decode(tokenizer, anchor)
    return {token: decode(tokenizer, anchor + [token])[len(anchor_text):] for token in set(ids)}


def alternatives(tokenizer, logprobs: torch.Tensor, count: int) -> list[dict[str, float]]:
    """The `count` most likely tokens of each row of `logprobs` as {text: logprob} (the best kept on a clash)."""
    if count <= 0:
        return [{} for _ in range(logprobs.size(0))]
    values, indices = logprobs.topk(min(count, logprobs.size(-1)), dim=-1)
    texts = token_texts(tokenizer, indices.flatten().tolist())
    rows = []
    for row_values, row_indices in zip(values.tolist(), indices.tolist()):
        row: dict[str, float] = {}
        for value, index in zip(row_values, row_indices):
            row.setdefault(texts[index], value)
        rows.append(row)
    return rows


def sampling_warpers(decoding: Decoding) -> list:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = [TemperatureLogitsWarper(decoding.temperature)]
    if decoding.top_k is not None and decoding.top_k > 0:
        warpers.append(TopKLogitsWarper(decoding.top_k))
    if decoding.top_p < 1.0:
        warpers.append(TopPLogitsWarper(decoding.top_p))
    return warpers


@functools.lru_cache(maxsize=None)
def _cache_argument(forward_owner: type) -> str:
    parameters = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(model) -> str:
    """The keyword the installed transformers takes the KV cache by (and returns it as): `cache` from 5.25 on,
    `past_key_values` before; the old name still works in 5.25 but warns on every call."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_argument(type(base))


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def context_length(model) -> int | None:
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    return getattr(config, "max_position_embeddings", None)


def check_length(model, prompt_tokens: int, max_new_tokens: int) -> None:
    limit = context_length(model)
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise NextaiError(f"prompt of {prompt_tokens} tokens plus max_new_tokens {max_new_tokens} exceeds the "
                          f"model's {limit} positions")


class _Row:
    """One completion being built: its text, tokens and where each token starts in the text."""

    def __init__(self, tokenizer, prompt: list[int], decoding: Decoding) -> None:
        self.detokenizer = Detokenizer(tokenizer, prompt)
        self.decoding = decoding
        self.text = ""
        self.tokens: list[Token] = []
        self.starts: list[int] = []
        self.finish_reason: str | None = None
        self.generated = 0
        self.streamed = 0  # characters of `text` handed out so far

    def add(self, token: int, logprob: float, top: dict[str, float], ends: frozenset[int]) -> None:
        self.generated += 1
        if token in ends:
            self.finish_reason = "eos"
            return
        piece = self.detokenizer.push(token)
        before = len(self.text)
        self.starts.append(before)
        self.tokens.append(Token(piece, logprob, top))
        self.text += piece
        longest = max((len(s) for s in self.decoding.stop), default=0)
        window_start = max(0, before - longest + 1)
        hits = [i for i in (self.text.find(s, window_start) for s in self.decoding.stop if s) if i >= 0]
        if hits:
            self.cut(min(hits))
            self.finish_reason = "stop"

    def finish(self) -> None:
        """At the end of generation, give the last token any text its detokenizer still held back."""
        if self.finish_reason != "stop" and self.tokens:
            rest = self.detokenizer.flush()
            self.tokens[-1].text += rest
            self.text += rest

    def ready(self) -> str:
        """Text not handed out yet that no stop sequence can begin in: everything once finished, else all but the
        longest end of the text that is the start of a stop sequence."""
        end = len(self.text)
        if self.finish_reason is None:
            end -= max((k for s in self.decoding.stop for k in range(min(len(s) - 1, end), 0, -1)
                        if self.text.endswith(s[:k])), default=0)
        if end <= self.streamed:
            return ""
        piece, self.streamed = self.text[self.streamed:end], end
        return piece

    def cut(self, at: int) -> None:
        """Drop the text from `at` on, and the tokens that start there; a token across `at` keeps its part."""
        self.text = self.text[:at]
        keep = [i for i, start in enumerate(self.starts) if start < at]
        self.tokens = [self.tokens[i] for i in keep]
        self.starts = [self.starts[i] for i in keep]
        if self.tokens:
            last = self.tokens[-1]
            last.text = last.text[:at - self.starts[-1]]


def scoring_prefix(tokenizer, prompt: Sequence[int]) -> int | None:
    """The token put before a prompt that does not start with BOS so that its first token is scored too: BOS, or
    EOS where there is none (lm-evaluation-harness's convention). None when the prompt starts with BOS (BOS itself
    is no text and gets 0.0) or the tokenizer has neither."""
    bos = tokenizer.bos_token_id
    if prompt and bos is not None and prompt[0] == bos:
        return None
    return bos if bos is not None else tokenizer.eos_token_id


@torch.inference_mode()
def _prompt_tokens(model, tokenizer, prompt: list[int], decoding: Decoding) -> list[Token]:
    """The prompt's own tokens, each scored given those before it. A leading BOS gets 0.0; a tokenizer that adds
    no BOS (SmolLM2's) leaves real text first, which is scored after `scoring_prefix`."""
    device = model_device(model)
    prefix = scoring_prefix(tokenizer, prompt)
    read = prompt if prefix is None else [prefix, *prompt]
    ids = torch.tensor([read], device=device)
    logits = model(input_ids=ids, use_cache=False).logits[0]
    detokenizer = Detokenizer(tokenizer)
    tokens = [Token(detokenizer.push(prompt[0]), 0.0, {})] if prefix is None else []
    for start in range(0, len(read) - 1, ECHO_CHUNK):
        end = min(start + ECHO_CHUNK, len(read) - 1)  # position i predicts token i + 1
        chunk = torch.log_softmax(logits[start:end].float(), dim=-1)
        targets = ids[0, start + 1:end + 1]
        chosen = chunk.gather(-1, targets[:, None])[:, 0].tolist()
        tops = alternatives(tokenizer, chunk, decoding.top_logprobs)
        for target, logprob, top in zip(targets.tolist(), chosen, tops, strict=True):
            tokens.append(Token(detokenizer.push(target), logprob, top))
    return tokens


@torch.inference_mode()
def _generate_batch(model, tokenizer, prompts: list[list[int]], decoding: Decoding, generator: torch.Generator,
                    cancelled: Callable[[], bool] | None, on_text: Callable[[int, str], None] | None
                    ) -> list[Completion]:
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = [_Row(tokenizer, p, decoding) for p in prompts]
    warpers = [] if decoding.greedy else sampling_warpers(decoding)
    ends = frozenset(t for t in (tokenizer.eos_token_id, *decoding.stop_token_ids) if t is not None)
    cache_name = cache_argument(model)
    cache = None
    step_ids, step_positions = input_ids, positions
    for _ in range(decoding.max_new_tokens):
        if cancelled is not None and cancelled():
            raise GenerationCancelled
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions, use_cache=True,
                    logits_to_keep=1, **{cache_name: cache})
        cache = getattr(out, cache_name)
        logits = out.logits[:, -1, :].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if decoding.greedy:
            chosen = logits.argmax(dim=-1)
        else:
            scores = logits
            for warp in warpers:
                scores = warp(input_ids, scores)
            chosen = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[:, 0]
        chosen_logprobs = logprobs.gather(-1, chosen[:, None])[:, 0].tolist()
        tops = alternatives(tokenizer, logprobs, decoding.top_logprobs)
        for index, (row, token, logprob, top) in enumerate(zip(rows, chosen.tolist(), chosen_logprobs, tops)):
            if row.finish_reason is None:
                row.add(token, logprob, top, ends)
                if on_text is not None and (piece := row.ready()):
                    on_text(index, piece)
        if all(row.finish_reason is not None for row in rows):
            break
        step_ids = chosen[:, None]
        step_positions = step_positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], dim=1)
    completions = []
    for index, (prompt, row) in enumerate(zip(prompts, rows)):
        row.finish()
        if row.finish_reason is None:
            row.finish_reason = "length"
        if on_text is not None and (piece := row.ready()):
            on_text(index, piece)
        tokens = row.tokens
        text = row.text
        if decoding.echo_prompt:
            echoed = _prompt_tokens(model, tokenizer, prompt, decoding)
            tokens = echoed + tokens
            text = "".join(t.text for t in echoed) + text
        completions.append(Completion(text=text, tokens=tokens, logprob=sum(t.logprob for t in tokens),
                                      finish_reason=row.finish_reason, prompt_tokens=len(prompt),
                                      generated=row.generated))
    return completions


def generate(model, tokenizer, prompts: Sequence[Prompt], decoding: Decoding, batch_size: int = 8,
             cancelled: Callable[[], bool] | None = None, on_text: TextCallback | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[Completion]:
    """Complete every prompt; prompts of similar length share a batch (left-padded), results keep input order.

    A prompt is text (encoded with the tokenizer's special tokens, as HELM's prompts are) or token ids (a chat
    template's rendering, see `nextai.eval.prompting`). `cancelled` is polled before every decoding step; when it
    returns true, `GenerationCancelled` is raised. `on_text(index, piece)` gets each prompt's completion as it
    grows (see the module docstring); `on_batch(count)` the number of prompts completed by each batch (progress).
    """
    if decoding.max_new_tokens < 0:
        raise NextaiError(f"max_new_tokens must be 0 or more, got {decoding.max_new_tokens}")
    encoded = [encode(tokenizer, p) if isinstance(p, str) else list(p) for p in prompts]
    if any(not ids for ids in encoded):
        raise NextaiError("a prompt of no tokens: give some text")
    for ids in encoded:
        check_length(model, len(ids), decoding.max_new_tokens)
    device = model_device(model)
    generator = torch.Generator(device=device)
    if decoding.seed is not None:
        generator.manual_seed(decoding.seed)
    else:
        generator.manual_seed(time.time_ns() % (2**63))
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # longest first: memory peaks show early
    results: list[Completion | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), max(batch_size, 1)):
            batch = order[start:start + max(batch_size, 1)]
            stream = None if on_text is None else (lambda row, piece, batch=batch: on_text(batch[row], piece))
            for index, completion in zip(batch, _generate_batch(model, tokenizer, [encoded[i] for i in batch],
                                                                decoding, generator, cancelled, stream)):
                results[index] = completion
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return results
