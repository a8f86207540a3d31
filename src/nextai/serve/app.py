"""`nextai serve`: the challenge's HTTP API (`/process`, `/tokenize`, `/decode`) over eval's generation, so HELM
can evaluate a nextai model unchanged (`HELM_HTTP_MODEL_BASE_URL=http://127.0.0.1:8080`).

The model runs one request at a time on one worker thread. At most `queue_size` requests wait or run; one more
is answered 503 at once. A request that has not finished `timeout` seconds after it arrived (queue wait included)
is answered 504 and its generation stops at the next token. Bodies over `max_request_bytes` get 413, wrong fields
422, everything with a message; an error inside generation is a 5xx for that request, never the end of the server.
"""

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from nextai.errors import NextaiError
from nextai.eval.generate import Decoding, GenerationCancelled, decode, encode, generate
from nextai.serve.api import (DecodeRequest, DecodeResponse, ProcessRequest, ProcessResponse, Token,
                              TokenizeRequest, TokenizeResponse)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for and how much work may wait."""

    max_new_tokens: int = 1024
    max_top_logprobs: int = 20
    queue_size: int = 16  # requests waiting or running; one more gets 503
    timeout: float = 600.0  # seconds from arrival to answer; later gets 504
    max_request_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "queue_size", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise NextaiError(f"serve: {name} must be at least 1, got {getattr(self, name)}")
        if self.timeout <= 0:
            raise NextaiError(f"serve: timeout must be positive, got {self.timeout}")


class QueueFull(Exception):
    pass


class ModelWorker:
    """Runs jobs on the model one at a time, in arrival order, with a bounded number outstanding."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.outstanding = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextai-model")

    async def run(self, job: Callable[[Callable[[], bool]], object], timeout: float):
        """`job(cancelled)` on the worker thread; `cancelled()` turns true at the deadline. Raises `QueueFull`,
        or `GenerationCancelled` when the deadline passes first."""
        with self._lock:
            if self.outstanding >= self.queue_size:
                raise QueueFull
            self.outstanding += 1
        deadline = time.monotonic() + timeout

        def cancelled() -> bool:
            return time.monotonic() > deadline

        def work():
            try:
                if cancelled():  # waited out its whole time in the queue
                    raise GenerationCancelled
                return job(cancelled)
            finally:
                with self._lock:
                    self.outstanding -= 1

        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise GenerationCancelled from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` (declared or streamed) are answered 413 before any handler."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def reject(self, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.reject(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self.reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def decoding_for(request: ProcessRequest) -> Decoding:
    return Decoding(max_new_tokens=request.max_new_tokens, temperature=request.temperature,
                    top_k=request.top_k or None, top_p=request.top_p, stop=tuple(s for s in request.stop_sequences
                                                                                 if s),
                    top_logprobs=request.top_k_per_token, echo_prompt=bool(request.echo_prompt), seed=request.seed)


async def invalid_request(request, error: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's usual detail, minus the echoed input: a body may hold values JSON cannot encode back
    (Python's parser reads `Infinity`), which would turn the answer into a 500."""
    detail = [{key: value for key, value in item.items() if key not in ("input", "ctx")} for item in error.errors()]
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def create_app(model, tokenizer, limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The FastAPI app answering the challenge's endpoints with `model` (in eval mode) and its `tokenizer`."""
    worker = ModelWorker(limits.queue_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.shutdown()

    app = FastAPI(title="nextai", description="The NeurIPS 2023 LLM Efficiency Challenge submission API",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.state.worker = worker
    vocabulary = len(tokenizer)

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
        decoding = decoding_for(request)
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


async def run_on_model(worker: ModelWorker, job, timeout: float):
    """`worker.run`, with each way it can fail turned into an HTTP answer."""
    import torch

    try:
        return await worker.run(job, timeout)
    except QueueFull:
        raise HTTPException(503, f"server busy: {worker.queue_size} requests already waiting or running; retry",
                            headers={"Retry-After": "1"}) from None
    except GenerationCancelled:
        raise HTTPException(504, f"request not finished within the server's timeout of {timeout:g} s") from None
    except NextaiError as err:  # an impossible request, found once tokenized (prompt longer than the context)
        raise HTTPException(422, str(err)) from None
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        log.exception("out of memory while generating")
        raise HTTPException(503, "out of GPU memory for this request; retry with a shorter prompt or fewer "
                                 "tokens") from None
    except Exception as err:  # the server must outlive any one request
        log.exception("generation failed")
        raise HTTPException(500, f"generation failed: {type(err).__name__}: {err}") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model, tokenizer, host: str, port: int, limits: ServeLimits) -> None:
    """Answer the challenge's API on host:port until interrupted."""
    import uvicorn

    if not is_loopback(host):
        log.warning("listening on %s: reachable from other machines (the API has no authentication)", host)
    log.info("serving the challenge API on http://%s:%d (queue %d, timeout %g s, at most %d new tokens)",
             host, port, limits.queue_size, limits.timeout, limits.max_new_tokens)
    uvicorn.run(create_app(model, tokenizer, limits), host=host, port=port, log_level="info")


def serve_run(trainer, module, adapter: str | None, ckpt_path: str | None, host: str, port: int,
              limits: ServeLimits) -> None:
    """`NextaiTrainer.serve`: load the run's model on the trainer's device and serve it."""
    from pathlib import Path

    from nextai.eval.model import choose_weights, load_model

    adapter, ckpt_path = choose_weights(adapter, ckpt_path, Path(trainer.default_root_dir))
    loaded = load_model(module, trainer.strategy.root_device, adapter, ckpt_path)
    serve(loaded.model, loaded.tokenizer, host, port, limits)
