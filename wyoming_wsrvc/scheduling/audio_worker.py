"""One worker thread fed by the fair queue (the audio side: vocoder, RVC, resampling).

Each client (connection) has its own FIFO of jobs; the worker takes one job from each client in
turn, so a long answer's conversion cannot hold back another client's first audio, while each
client's jobs stay in order. A request's first audio may jump the queue (`urgent`): it
is what a satellite waits for. Cancelling a client drops its queued jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine.threads import use
from .fair_queue import FairQueue

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
        self._queue: FairQueue[_Job] = FairQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, client: object, fn: Callable[[], T], urgent: bool = False) -> Future[T]:
        """Queue `fn` for `client`; the future carries its result or exception. `urgent` jobs
        (a request's first audio) run before all others, in the order they came."""
        future: Future[T] = Future()
        self._queue.put(client, _Job(future, fn), urgent)
        return future

    def cancel(self, client: object) -> int:
        """Drop every queued (not yet running) job of `client`; return how many."""
        jobs = self._queue.drop(client)
        for job in jobs:
            job.future.cancel()
        return len(jobs)

    def idle(self) -> bool:
        """No job running and none queued."""
        with self._queue.lock:
            return not self._running and not self._queue

    def pending(self) -> int:
        return len(self._queue)

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Cancel everything queued and stop the thread after the running job.

        Returns False if a job was still running when `timeout` expired.
        """
        for job in self._queue.close():
            job.future.cancel()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next_job(self) -> _Job | None:
        with self._queue.lock:
            if not self._queue.wait():
                return None
            self._running = True
            return self._queue.take()

    def _loop(self) -> None:
        if self._threads is not None:
            use(self._threads)
        while (job := self._next_job()) is not None:
            try:
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = job.fn()
                except BaseException as err:  # noqa: BLE001 - the future carries it to the caller
                    job.future.set_exception(err)
                else:
                    job.future.set_result(result)
            finally:
                with self._queue.lock:
                    self._running = False
