"""The decode thread: every request's decoding, stepped together in shared batches.

Requests wait in the fair queue (one per client) and are admitted in round robin over the
clients, one request per client at a time, while the rows being decoded stay within
`max_rows` (a request larger than that is admitted alone). Each turn is `engine.speech.
decode_turn` over every admitted request: every shared batch takes one step (T2S tokens, S2A
frames for every admitted request at once), stages with their own iterator one piece each, and
the pieces made go to their requests. A client that goes away leaves the batch before the next
step. Past `max_queue` clients waiting, a new client is refused (`busy`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config.settings import MAX_BATCH, MAX_QUEUE
from ..engine.failures import synthesis_errors
from ..engine.speech import SpeechPiece, SpeechWork, decode_turn
from ..engine.threads import use
from ..errors import ClientError
from ..models.whisperspeech.decoding import DecodeBatches
from .fair_queue import FairQueue

_LOGGER = logging.getLogger(__name__)


@dataclass(eq=False)
class DecodeRequest:
    """One `speak` call: how to start its decoding (on the decode thread), where its pieces go,
    and where its failure goes. `rows`: the sentences it decodes at once."""

    client: object
    rows: int
    start: Callable[[DecodeBatches], SpeechWork]
    deliver: Callable[[list[SpeechPiece]], None]
    fail: Callable[[BaseException], None]
    work: SpeechWork | None = field(default=None, repr=False)


class DecodeLoop:
    """One thread that owns the decoding of every request."""

    def __init__(
        self,
        name: str = "wsrvc-decode",
        threads: int | None = None,
        max_rows: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.max_rows = max(1, max_rows)
        self.max_queue = max(0, max_queue)
        self._threads = threads
        self._queue: FairQueue[DecodeRequest] = FairQueue()
        self._active: list[DecodeRequest] = []
        self._gone: set[object] = set()
        self.batches = DecodeBatches()
        # told the rows of each decode step (the server's `/metrics`); on the decode thread
        self.on_step: Callable[[int], None] | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: DecodeRequest, new: bool = False) -> None:
        """Queue `request`. With `new` (the first part of a client's request) it is refused
        with `ClientError("busy")` when `max_queue` other clients already wait."""
        with self._queue.lock:
            if new and request.client not in self._queue and not self._serving(request.client):
                waiting = sum(1 for c in self._queue.clients() if not self._serving(c))
                if waiting >= self.max_queue and self._active:
                    raise ClientError(
                        "busy",
                        f"The server is busy: {waiting} requests are waiting; try again later",
                    )
            self._queue.put(request.client, request)

    def cancel(self, client: object) -> int:
        """Drop `client`'s queued requests, and take its running one out of the batch before
        the next step; return how many queued ones were dropped."""
        with self._queue.lock:
            queued = self._queue.drop(client)
            if self._serving(client):
                self._gone.add(client)
        return len(queued)

    def cancel_all(self) -> int:
        with self._queue.lock:
            clients = self._queue.clients() + [r.client for r in self._active]
        return sum(self.cancel(client) for client in clients)

    def idle(self) -> bool:
        """Nothing being decoded and nothing waiting."""
        with self._queue.lock:
            return not self._active and not self._queue

    def pending(self) -> int:
        """Requests waiting for their turn."""
        return len(self._queue)

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Stop after the current step; False if the thread had not stopped after `timeout`."""
        self._queue.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _serving(self, client: object) -> bool:
        return any(r.client is client for r in self._active)

    @staticmethod
    def _size(request: DecodeRequest) -> int:
        return request.work.rows if request.work is not None else request.rows

    def _admit(self) -> list[DecodeRequest]:
        """Under the lock: requests that may start now, round robin over the clients."""
        rows = sum(self._size(r) for r in self._active)

        def admit(client: object, request: DecodeRequest) -> bool | None:
            nonlocal rows
            if self._serving(client):
                return False
            if self._active and rows + request.rows > self.max_rows:
                return None
            rows += request.rows
            self._active.append(request)
            return True

        return self._queue.take_heads(admit)

    def _next_turn(self) -> tuple[list[DecodeRequest], list[DecodeRequest]] | None:
        """Wait for work; the requests to start and those whose clients are gone."""
        with self._queue.lock:
            if not self._queue.wait(lambda: bool(self._active)):
                return None
            gone = [r for r in self._active if r.client in self._gone]
            for request in gone:
                self._active.remove(request)
            self._gone.clear()
            return self._admit(), gone

    def _loop(self) -> None:
        if self._threads is not None:
            use(self._threads)
        with torch.inference_mode():
            while (turn := self._next_turn()) is not None:
                admitted, gone = turn
                for request in gone:
                    if request.work is not None:
                        request.work.cancel()
                    _LOGGER.debug("Client gone: its sentences leave the batch")
                for request in admitted:
                    self._start(request)
                self._step()

    def _start(self, request: DecodeRequest) -> None:
        try:
            with synthesis_errors():
                request.work = request.start(self.batches)
        except Exception as err:  # noqa: BLE001 - every failure reaches the client as `error`
            self._finish(request, err)

    def _step(self) -> None:
        with self._queue.lock:
            active = [r for r in self._active if r.work is not None]
        works = [r.work for r in active if r.work is not None]
        if self.on_step is not None and works:
            self.on_step(sum(work.rows for work in works))
        try:
            turns = decode_turn(self.batches, works)
        except Exception as err:
            _LOGGER.exception("A shared decode step failed: every request in it fails")
            with self._queue.lock:
                failed, self._active = self._active, []
            self.batches = DecodeBatches()
            for request in failed:
                request.fail(err)
            return
        for request, work, turn in zip(active, works, turns, strict=True):
            if turn.error is not None:
                work.cancel()
                self._finish(request, turn.error)
                continue
            if turn.pieces:
                request.deliver(turn.pieces)
            if work.done:
                self._finish(request)

    def _finish(self, request: DecodeRequest, error: BaseException | None = None) -> None:
        with self._queue.lock:
            if request in self._active:
                self._active.remove(request)
        if error is not None:
            request.fail(error)
