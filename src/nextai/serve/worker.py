"""The one thread that runs the model for every route of `nextai serve`: jobs in arrival order, a bounded number
outstanding (one more is refused at once), each with a deadline after which its generation stops at the next
token; the limits a request may ask for."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import HTTPException

from nextai.errors import NextaiError
from nextai.eval.generate import GenerationCancelled

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


@dataclass
class Ticket:
    """A job handed to the worker: its future, its deadline, and a flag the caller sets when nobody waits for the
    answer any more (a streaming client that went away)."""

    deadline: float
    abandoned: threading.Event = field(default_factory=threading.Event)
    future: asyncio.Future | None = None

    def cancelled(self) -> bool:
        return self.abandoned.is_set() or time.monotonic() > self.deadline

    def seconds_left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


class ModelWorker:
    """Runs jobs on the model one at a time, in arrival order, with a bounded number outstanding."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.outstanding = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextai-model")

    def submit(self, job: Callable[[Callable[[], bool]], object], timeout: float) -> Ticket:
        """Queue `job(cancelled)` (run on the worker thread; `cancelled()` turns true at the deadline or when the
        ticket is abandoned) and return at once. Raises `QueueFull` when `queue_size` jobs are outstanding."""
        with self._lock:
            if self.outstanding >= self.queue_size:
                raise QueueFull
            self.outstanding += 1
        ticket = Ticket(deadline=time.monotonic() + timeout)

        def work():
            try:
                if ticket.cancelled():  # waited out its whole time in the queue
                    raise GenerationCancelled
                return job(ticket.cancelled)
            finally:
                with self._lock:
                    self.outstanding -= 1

        ticket.future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        # A caller that gave up (timeout, client gone) never reads the job's outcome: mark it read, so asyncio does
        # not log "exception was never retrieved" for each.
        ticket.future.add_done_callback(lambda done: done.cancelled() or done.exception())
        return ticket

    async def run(self, job: Callable[[Callable[[], bool]], object], timeout: float):
        """`submit` and wait for the result. Raises `QueueFull`, or `GenerationCancelled` when the deadline passes
        first."""
        ticket = self.submit(job, timeout)
        try:
            return await asyncio.wait_for(asyncio.shield(ticket.future), timeout=ticket.seconds_left())
        except asyncio.TimeoutError:
            raise GenerationCancelled from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def http_error(err: BaseException, worker: ModelWorker, timeout: float, invalid_status: int = 422) -> HTTPException:
    """How a failed job is answered: 503 when the queue is full or the GPU out of memory, 504 past the deadline,
    `invalid_status` for an impossible request found once tokenized, 500 for anything else."""
    import torch

    if isinstance(err, QueueFull):
        return HTTPException(503, f"server busy: {worker.queue_size} requests already waiting or running; retry",
                             headers={"Retry-After": "1"})
    if isinstance(err, GenerationCancelled):
        return HTTPException(504, f"request not finished within the server's timeout of {timeout:g} s")
    if isinstance(err, NextaiError):  # an impossible request (prompt longer than the context)
        return HTTPException(invalid_status, str(err))
    if isinstance(err, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        log.error("out of memory while generating")
        return HTTPException(503, "out of GPU memory for this request; retry with a shorter prompt or fewer tokens")
    log.error("generation failed", exc_info=err)
    return HTTPException(500, f"generation failed: {type(err).__name__}: {err}")


async def run_on_model(worker: ModelWorker, job, timeout: float, invalid_status: int = 422):
    """`worker.run`, with each way it can fail turned into an HTTP answer (the server outlives any one request)."""
    try:
        return await worker.run(job, timeout)
    except Exception as err:  # noqa: BLE001 - every failure becomes an answer, see http_error
        raise http_error(err, worker, timeout, invalid_status) from None
