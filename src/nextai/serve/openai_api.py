"""Request bodies of the OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`), the fields OpenAI's
API reference gives them; what nextai cannot do with a field is answered 400 with its name, never ignored silently.

Unknown fields are ignored (clients send vendor extras). nextai's own extras: `top_k` (as vLLM), and on
`/v1/completions` `raw_prompt` (send the prompt as it is instead of in the run's prompt format).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Request(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="nextai/vLLM extra: sample among the k most likely")
    n: int = Field(1, ge=1, le=1, description="completions per request (one)")
    stream: bool = False
    stream_options: "StreamOptions | None" = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences")
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return tuple(s for s in stops if s)

    def unsupported(self) -> str | None:
        """The first field set to something nextai does not do, as a message."""
        if self.presence_penalty or self.frequency_penalty:
            return "presence_penalty and frequency_penalty are not supported (leave them 0)"
        return None


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)

    def conversation(self) -> list[dict]:
        """The messages as nextai's records write them (`developer` is OpenAI's newer name for `system`)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    suffix: str | None = None
    raw_prompt: bool = Field(False, description="nextai extra: the prompt as it is, not in the run's format")

    def prompt_text(self) -> str | None:
        """The one prompt, or None for a list of several (one completion per request)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None

    def unsupported(self) -> str | None:
        if self.echo:
            return "echo is not supported here (the challenge's /process returns the prompt's tokens: echo_prompt)"
        if self.suffix:
            return "suffix (insertion) is not supported"
        if self.prompt_text() is None:
            return "prompt: give one string (one completion per request)"
        return super().unsupported()


_Request.model_rebuild()
ChatCompletionRequest.model_rebuild()
CompletionRequest.model_rebuild()
