"""`nextai serve`: the challenge's HTTP API (`/process`, `/tokenize`, `/decode`) over eval's generation, so HELM
can evaluate a nextai model unchanged (`HELM_HTTP_MODEL_BASE_URL=http://127.0.0.1:8080`), beside OpenAI-compatible
routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`; `nextai.serve.openai_routes`) and `/health`.

`/process` reads HELM's whole prompts as they are (HELM writes the in-context examples and the question itself);
the /v1 routes write prompts in the run's prompt format. Every route ends a reply at EOS, at the chat template's
end-of-turn token and at the request's stop sequences.

The model runs one request at a time on one worker thread (`nextai.serve.worker`). At most `queue_size` requests
wait or run; one more is answered 503 at once. A request that has not finished `timeout` seconds after it arrived
(queue wait included) is answered 504 and its generation stops at the next token. Bodies over `max_request_bytes`
get 413, wrong fields 422 (400 under /v1, as OpenAI answers), everything with a message; an error inside
generation is a 5xx for that request, never the end of the server. With an API key set every route but `/health`
needs `Authorization: Bearer <key>` (401 else; `nextai.serve.guards`).
"""

import contextlib
import logging
import time

from fastapi import FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextai.eval.generate import Decoding, decode, encode, generate
from nextai.eval.prompting import InferencePrompt, find_prompt_format
from nextai.serve.api import (DecodeRequest, DecodeResponse, ProcessRequest, ProcessResponse, Token,
                              TokenizeRequest, TokenizeResponse)
from nextai.serve.guards import ApiKey, BodyLimit, check_exposure, error_body, is_loopback
from nextai.serve.openai_routes import openai_router
from nextai.serve.worker import ModelWorker, ServeLimits, run_on_model

log = logging.getLogger(__name__)
DEFAULT_MODEL_NAME = "nextai"


def decoding_for(request: ProcessRequest, stop_token_ids: tuple[int, ...] = ()) -> Decoding:
    return Decoding(max_new_tokens=request.max_new_tokens, temperature=request.temperature,
                    top_k=request.top_k or None, top_p=request.top_p, stop=tuple(s for s in request.stop_sequences
                                                                                 if s),
                    stop_token_ids=stop_token_ids, top_logprobs=request.top_k_per_token,
                    echo_prompt=bool(request.echo_prompt), seed=request.seed)


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


async def invalid_request(request, error: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's usual detail (400 in OpenAI's error shape under /v1), minus the echoed input: a body may
    hold values JSON cannot encode back (Python's parser reads `Infinity`), which would turn the answer into a
    500."""
    detail = [{key: value for key, value in item.items() if key not in ("input", "ctx")} for item in error.errors()]
    if is_openai_path(request.url.path):
        message = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', ()) if p != 'body')}: {item.get('msg')}"
                            for item in detail)
        return JSONResponse(error_body(request.url.path, 400, message or "invalid request"), status_code=400)
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


async def http_exception(request, error: StarletteHTTPException) -> JSONResponse:
    """HTTP errors in the shape the route's clients read (OpenAI's under /v1)."""
    return JSONResponse(error_body(request.url.path, error.status_code, str(error.detail)),
                        status_code=error.status_code, headers=getattr(error, "headers", None))


def create_app(model, tokenizer, limits: ServeLimits = ServeLimits(), prompt: InferencePrompt | None = None,
               api_key: str | None = None, model_name: str = DEFAULT_MODEL_NAME) -> FastAPI:
    """The FastAPI app answering the challenge's and the OpenAI-compatible routes with `model` (in eval mode) and
    its `tokenizer`; `prompt` is how the /v1 routes write prompts (default: for the base alone, see
    `find_prompt_format`), `api_key` what every route but /health asks for (None: nothing)."""
    worker = ModelWorker(limits.queue_size)
    if prompt is None:
        prompt = find_prompt_format(tokenizer, None, None, ".", None)
    stop_token_ids = prompt.stop_token_ids()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.shutdown()

    app = FastAPI(title="nextai", description="The NeurIPS 2023 LLM Efficiency Challenge submission API and "
                                              "OpenAI-compatible routes", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    app.add_middleware(ApiKey, key=api_key)  # added last: runs first, so no unauthenticated body is read
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_exception)
    app.state.worker = worker
    app.state.prompt = prompt
    vocabulary = len(tokenizer)
    app.include_router(openai_router(model, tokenizer, prompt, worker, limits, model_name))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "requests_outstanding": worker.outstanding,
                "queue_size": worker.queue_size}

    @app.post("/process", response_model=ProcessResponse)
    async def process(request: ProcessRequest) -> ProcessResponse:
        if request.max_new_tokens > limits.max_new_tokens:
            raise HTTPException(422, f"max_new_tokens {request.max_new_tokens} is over this server's limit of "
                                     f"{limits.max_new_tokens}")
        if request.top_k_per_token > limits.max_top_logprobs:
            raise HTTPException(422, f"top_k_per_token {request.top_k_per_token} is over this server's limit of "
                                     f"{limits.max_top_logprobs}")
        if request.max_new_tokens == 0 and not request.echo_prompt:
            raise HTTPException(422, "max_new_tokens 0 without echo_prompt asks for nothing")
        decoding = decoding_for(request, stop_token_ids)
        started = time.perf_counter()

        def job(cancelled):
            return generate(model, tokenizer, [request.prompt], decoding, batch_size=1, cancelled=cancelled)[0]

        completion = await run_on_model(worker, job, limits.timeout)
        return ProcessResponse(
            text=completion.text,
            tokens=[Token(text=t.text, logprob=t.logprob, top_logprob=t.top_logprobs) for t in completion.tokens],
            logprob=completion.logprob, request_time=time.perf_counter() - started)

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(request: TokenizeRequest) -> TokenizeResponse:
        started = time.perf_counter()
        ids = encode(tokenizer, request.text)
        if request.truncation:
            ids = ids[:request.max_length]
        return TokenizeResponse(tokens=ids, request_time=time.perf_counter() - started)

    @app.post("/decode", response_model=DecodeResponse)
    async def decode_tokens(request: DecodeRequest) -> DecodeResponse:
        started = time.perf_counter()
        bad = [t for t in request.tokens if not 0 <= t < vocabulary]
        if bad:
            raise HTTPException(422, f"token id {bad[0]} is outside the vocabulary (0 to {vocabulary - 1})")
        return DecodeResponse(text=decode(tokenizer, request.tokens), request_time=time.perf_counter() - started)

    return app


def serve(model, tokenizer, host: str, port: int, limits: ServeLimits, prompt: InferencePrompt | None = None,
          api_key: str | None = None, unauthenticated: bool = False, model_name: str = DEFAULT_MODEL_NAME) -> None:
    """Answer the challenge's and the OpenAI-compatible routes on host:port until interrupted."""
    import uvicorn

    check_exposure(host, api_key, unauthenticated)
    if not is_loopback(host) and not api_key:
        log.warning("listening on %s without an API key: reachable from other machines, unauthenticated", host)
    log.info("serving %s on http://%s:%d: /process, /tokenize, /decode (the challenge's API), /v1/chat/completions, "
             "/v1/completions, /v1/models, /health (queue %d, timeout %g s, at most %d new tokens%s)", model_name,
             host, port, limits.queue_size, limits.timeout, limits.max_new_tokens,
             ", API key required" if api_key else "")
    uvicorn.run(create_app(model, tokenizer, limits, prompt, api_key, model_name), host=host, port=port,
                log_level="info")


def serve_run(trainer, module, adapter: str | None, ckpt_path: str | None, host: str, port: int,
              limits: ServeLimits, api_key: str | None = None, unauthenticated: bool = False,
              model_name: str | None = None) -> None:
    """`NextaiTrainer.serve`: load the run's model on the trainer's device and serve it."""
    import os
    from pathlib import Path

    from nextai.eval.model import choose_weights, load_model
    from nextai.serve.guards import API_KEY_VARIABLE

    api_key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
    check_exposure(host, api_key, unauthenticated)  # before minutes of loading
    run_directory = Path(trainer.default_root_dir)
    adapter, ckpt_path = choose_weights(adapter, ckpt_path, run_directory)
    loaded = load_model(module, trainer.strategy.root_device, adapter, ckpt_path, run_directory)
    serve(loaded.model, loaded.tokenizer, host, port, limits, loaded.prompt, api_key, unauthenticated,
          model_name or run_directory.resolve().name or DEFAULT_MODEL_NAME)
