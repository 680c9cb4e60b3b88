"""One worker thread fed by a fair queue (the audio side: vocoder, RVC, resampling).

Each client (connection) has its own FIFO of jobs; the worker takes one job from each client in
turn, so a long answer's conversion cannot hold back another client's first audio, while each
client's jobs stay in order. A request's first audio may jump the queue (`urgent`): it
is what a satellite waits for. Cancelling a client drops its queued jobs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine.threads import use

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Job:
    future: Future[Any]
    fn: Callable[[], Any]


class FairWorker:
    """A single worker thread with round-robin scheduling over clients."""

    def __init__(self, name: str = "wsrvc-worker", threads: int | None = None) -> None:
        self._threads = threads
        self._running = False
        self._queues: OrderedDict[object, deque[_Job]] = OrderedDict()
        self._urgent: deque[tuple[object, _Job]] = deque()  # served first, in order
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, client: object, fn: Callable[[], T], urgent: bool = False) -> Future[T]:
        """Queue `fn` for `client`; the future carries its result or exception. `urgent` jobs
        (a request's first audio) run before all others, in the order they came."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("worker is shut down")
            if urgent:
                self._urgent.append((client, _Job(future, fn)))
            else:
                self._queues.setdefault(client, deque()).append(_Job(future, fn))
            self._cond.notify()
        return future

    async def run(self, client: object, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(client, fn))

    def cancel(self, client: object) -> int:
        """Drop every queued (not yet running) job of `client`; return how many."""
        with self._cond:
            jobs = self._queues.pop(client, deque())
            jobs += [job for owner, job in self._urgent if owner is client]
            self._urgent = deque((o, j) for o, j in self._urgent if o is not client)
        for job in jobs:
            job.future.cancel()
        return len(jobs)

    def cancel_all(self) -> int:
        """Drop every queued job of every client."""
        with self._cond:
            clients = list(self._queues)
        return sum(self.cancel(client) for client in clients)

    def idle(self) -> bool:
        """No job running and none queued."""
        with self._cond:
            return not self._running and not self._urgent and not any(self._queues.values())

    def pending(self) -> int:
        with self._cond:
            return len(self._urgent) + sum(len(q) for q in self._queues.values())

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Cancel everything queued and stop the thread after the running job.

        Returns False if a job was still running when `timeout` expired.
        """
        with self._cond:
            self._closed = True
            queues, self._queues = self._queues, OrderedDict()
            queues[None] = deque(job for _, job in self._urgent)
            self._urgent.clear()
            self._cond.notify_all()
        for jobs in queues.values():
            for job in jobs:
                job.future.cancel()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._queues and not self._urgent and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self._urgent:
                self._running = True
                return self._urgent.popleft()[1]
            client, jobs = self._queues.popitem(last=False)
            job = jobs.popleft()
            if jobs:
                self._queues[client] = jobs  # back of the line
            self._running = True
            return job

    def _loop(self) -> None:
        if self._threads is not None:
            use(self._threads)
        while (job := self._next_job()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn()
            except BaseException as err:  # noqa: BLE001 - the future carries it to the caller
                job.future.set_exception(err)
            else:
                job.future.set_result(result)
            finally:
                with self._cond:
                    self._running = False
