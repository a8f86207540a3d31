"""Request and response bodies of the challenge's submission API, as its sample submission defines them
(llm-efficiency-challenge/neurips_llm_efficiency_challenge, `sample-submissions/lit-gpt/api.py`), plus the fields
HELM's HTTP client sends besides them (`top_p`, `top_k_per_token`, `stop_sequences`, `num_return_sequences`).

Unknown fields are ignored and wrong types answered with 422, as the sample's pydantic models do. Bounds that
make a request impossible (a negative `max_new_tokens`, several samples) are 422 too, with a message.
"""

from pydantic import BaseModel, ConfigDict, Field

from nextai.eval.generate import CHALLENGE_TOP_K


class ProcessRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # JSON's Infinity/NaN are not temperatures or probabilities

    prompt: str
    num_samples: int = Field(1, ge=1, le=1, description="completions per request (one: the response holds one)")
    max_new_tokens: int = Field(50, ge=0)
    top_k: int = Field(CHALLENGE_TOP_K, ge=0, description="sample among the k most likely tokens; 0: all")
    temperature: float = Field(0.8, ge=0.0, description="below 1e-5: greedy")
    seed: int | None = None
    echo_prompt: bool | None = Field(None, description="also return the prompt's tokens; null means false")
    # Sent by HELM's HTTP client (helm/proxy/clients/http_model_client.py).
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k_per_token: int = Field(1, ge=0, description="alternatives reported per token")
    stop_sequences: list[str] = Field(default_factory=list, description="text that ends the completion (cut)")
    num_return_sequences: int = Field(1, ge=1, le=1)


class Token(BaseModel):
    text: str
    logprob: float
    top_logprob: dict[str, float]


class ProcessResponse(BaseModel):
    text: str
    tokens: list[Token]
    logprob: float
    request_time: float


class TokenizeRequest(BaseModel):
    text: str
    truncation: bool = True
    max_length: int = Field(2048, ge=1)


class TokenizeResponse(BaseModel):
    tokens: list[int]
    request_time: float


class DecodeRequest(BaseModel):
    tokens: list[int]


class DecodeResponse(BaseModel):
    text: str
    request_time: float
