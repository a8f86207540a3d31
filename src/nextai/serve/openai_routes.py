"""OpenAI-compatible routes over nextai's generation: `/v1/chat/completions` and `/v1/completions` (whole answers,
or server-sent events in OpenAI's chunk format ending with `data: [DONE]`), `/v1/models`.

Prompts are written in the run's prompt format (`nextai.eval.prompting`): a conversation through its chat template
or the Alpaca prompt it learned, a completion prompt as the user's one turn (`raw_prompt: true` sends it as it is).
A reply ends at EOS, at the template's end-of-turn token or at a stop sequence (`finish_reason: stop`), or at
`max_tokens` (`length`). The same worker, queue (503), timeout (504) and limits as the challenge's `/process`.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from nextai.errors import NextaiError
from nextai.eval.generate import Completion, Decoding, check_length, context_length, encode, generate
from nextai.eval.prompting import InferencePrompt
from nextai.serve.openai_api import ChatCompletionRequest, CompletionRequest
from nextai.serve.worker import ModelWorker, QueueFull, ServeLimits, http_error, run_on_model

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def usage(completion: Completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.generated,
            "total_tokens": completion.prompt_tokens + completion.generated}


def chat_logprobs(completion: Completion) -> dict:
    def entry(text: str, logprob: float) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**entry(t.text, t.logprob), "top_logprobs": [entry(k, v) for k, v in t.top_logprobs.items()]}
                        for t in completion.tokens]}


def completion_logprobs(completion: Completion) -> dict:
    offsets, at = [], 0
    for token in completion.tokens:
        offsets.append(at)
        at += len(token.text)
    return {"tokens": [t.text for t in completion.tokens], "token_logprobs": [t.logprob for t in completion.tokens],
            "top_logprobs": [dict(t.top_logprobs) for t in completion.tokens], "text_offset": offsets}


def openai_router(model, tokenizer, prompt: InferencePrompt, worker: ModelWorker, limits: ServeLimits,
                  model_name: str) -> APIRouter:
    router = APIRouter(prefix="/v1")
    created = int(time.time())
    window = context_length(model)

    def check(request, requested: int | None, top_logprobs: int) -> None:
        if request.model not in (None, "", model_name):
            raise HTTPException(404, f"The model `{request.model}` does not exist; this server serves "
                                     f"`{model_name}` (GET /v1/models)")
        problem = request.unsupported()
        if problem:
            raise HTTPException(400, problem)
        if requested is not None and requested > limits.max_new_tokens:
            raise HTTPException(400, f"max_tokens {requested} is over this server's limit of {limits.max_new_tokens}")
        if top_logprobs > limits.max_top_logprobs:
            raise HTTPException(400, f"top_logprobs {top_logprobs} is over this server's limit of "
                                     f"{limits.max_top_logprobs}")

    def decoding(request, ids: list[int], requested: int | None, top_logprobs: int) -> Decoding:
        room = limits.max_new_tokens if window is None else min(limits.max_new_tokens, window - len(ids))
        max_new_tokens = requested if requested is not None else max(room, 1)
        try:
            check_length(model, len(ids), max_new_tokens)
        except NextaiError as err:
            raise HTTPException(400, str(err)) from None
        return Decoding(max_new_tokens=max_new_tokens, temperature=request.temperature, top_k=request.top_k or None,
                        top_p=request.top_p, stop=request.stop_sequences(), stop_token_ids=prompt.stop_token_ids(),
                        top_logprobs=top_logprobs, seed=request.seed)

    def render(build: Callable[[], list[int]]) -> list[int]:
        try:
            ids = build()
        except NextaiError as err:  # a conversation the template refuses (roles out of order, ...)
            raise HTTPException(400, str(err)) from None
        if not ids:
            raise HTTPException(400, "the prompt is empty")
        return ids

    async def answer(ids: list[int], settings: Decoding) -> Completion:
        def job(cancelled):
            return generate(model, tokenizer, [ids], settings, batch_size=1, cancelled=cancelled)[0]

        return await run_on_model(worker, job, limits.timeout, invalid_status=400)

    def stream(ids: list[int], settings: Decoding, chunk: Callable[[dict], dict], first: dict | None,
               last: Callable[[Completion], dict], include_usage: bool) -> StreamingResponse:
        """Start generating now (503 at once when the queue is full) and stream its text as it comes."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()

        def job(cancelled):
            return generate(model, tokenizer, [ids], settings, batch_size=1, cancelled=cancelled,
                            on_text=lambda _, piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))[0]

        try:
            ticket = worker.submit(job, limits.timeout)
        except QueueFull as err:
            raise http_error(err, worker, limits.timeout) from None

        async def events() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield sse(chunk(first))
                while True:
                    getter = asyncio.ensure_future(pieces.get())
                    done, _ = await asyncio.wait({getter, ticket.future}, timeout=ticket.seconds_left(),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield sse(chunk({"content": getter.result()}))
                        continue
                    getter.cancel()
                    if ticket.future not in done:  # past the deadline: generation stops at its next token
                        ticket.abandoned.set()
                        yield sse(error_event(504, f"request not finished within the server's timeout of "
                                                   f"{limits.timeout:g} s"))
                        break
                    while not pieces.empty():  # pieces queued before the job returned
                        yield sse(chunk({"content": pieces.get_nowait()}))
                    try:
                        completion = ticket.future.result()
                    except Exception as err:  # noqa: BLE001 - reported in the stream, the server goes on
                        failed = http_error(err, worker, limits.timeout, invalid_status=400)
                        yield sse(error_event(failed.status_code, failed.detail))
                        break
                    yield sse(last(completion))
                    if include_usage:
                        yield sse({**last(completion), "choices": [], "usage": usage(completion)})
                    break
                yield sse("[DONE]")
            finally:
                ticket.abandoned.set()  # a client that went away stops its generation too

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "nextai"}]}

    @router.post("/chat/completions")
    async def chat_completions(request: ChatCompletionRequest):
        top = (request.top_logprobs or 0) if request.logprobs else 0
        requested = request.requested_tokens()
        check(request, requested, top)
        if request.stream and request.logprobs:
            raise HTTPException(400, "logprobs are not streamed; ask without stream")
        ids = render(lambda: prompt.ids(request.conversation()))
        settings = decoding(request, ids, requested, top)
        identity = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if request.stream:
            def chunk(delta: dict) -> dict:
                return {**identity, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}

            def last(completion: Completion) -> dict:
                return {**identity, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                     "finish_reason": FINISH_REASONS[completion.finish_reason]}]}

            include = bool(request.stream_options and request.stream_options.include_usage)
            return stream(ids, settings, chunk, {"role": "assistant", "content": ""}, last, include)
        completion = await answer(ids, settings)
        return {**identity, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                             "logprobs": chat_logprobs(completion) if request.logprobs else None,
                             "finish_reason": FINISH_REASONS[completion.finish_reason]}],
                "usage": usage(completion)}

    @router.post("/completions")
    async def completions(request: CompletionRequest):
        top = request.logprobs or 0
        check(request, request.max_tokens, top)
        if request.stream and request.logprobs is not None:
            raise HTTPException(400, "logprobs are not streamed; ask without stream")
        text = request.prompt_text()
        ids = render(lambda: encode(tokenizer, text) if request.raw_prompt else prompt.text_ids(text))
        settings = decoding(request, ids, request.max_tokens, top)
        identity = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name,
                    "object": "text_completion"}
        if request.stream:
            def chunk(delta: dict) -> dict:
                return {**identity, "choices": [{"index": 0, "text": delta["content"], "logprobs": None,
                                                 "finish_reason": None}]}

            def last(completion: Completion) -> dict:
                return {**identity, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                 "finish_reason": FINISH_REASONS[completion.finish_reason]}]}

            include = bool(request.stream_options and request.stream_options.include_usage)
            return stream(ids, settings, chunk, None, last, include)
        completion = await answer(ids, settings)
        return {**identity, "choices": [{"index": 0, "text": completion.text,
                                         "logprobs": completion_logprobs(completion) if request.logprobs is not None
                                         else None,
                                         "finish_reason": FINISH_REASONS[completion.finish_reason]}],
                "usage": usage(completion)}

    return router


def error_event(status: int, message: str) -> dict:
    """An error inside a stream that has already answered 200, as vLLM and OpenAI send one."""
    return {"error": {"message": message, "type": "timeout" if status == 504 else "server_error", "code": status}}
