"""The one fair queue: items per client, served in round robin over the clients, each client's
in order; urgent items (a request's first audio) before all others, in the order they came.

Thread-safe: a condition guards it, and its owner (a worker thread) may hold `lock` to keep
state of its own consistent with the queue's. After `close` nothing more is accepted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosedError(RuntimeError):
    """The queue was closed (its worker shut down)."""


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self._queues: OrderedDict[object, deque[T]] = OrderedDict()
        self._urgent: deque[tuple[object, T]] = deque()
        self.closed = False

    def put(self, client: object, item: T, urgent: bool = False) -> None:
        with self.lock:
            if self.closed:
                raise QueueClosedError("the queue is closed")
            if urgent:
                self._urgent.append((client, item))
            else:
                self._queues.setdefault(client, deque()).append(item)
            self.lock.notify_all()

    def wait(self, ready: Callable[[], bool] = lambda: False) -> bool:
        """Under `lock`: wait until an item is queued, the queue is closed, or `ready()` (the
        owner's own work) holds; False once closed."""
        while not self.closed and not self and not ready():
            self.lock.wait()
        return not self.closed

    def take(self) -> T:
        """Under `lock`, on a non-empty queue: the next item (urgent first, else the front
        client's first, that client going to the back of the line)."""
        if self._urgent:
            return self._urgent.popleft()[1]
        client, items = self._queues.popitem(last=False)
        item = items.popleft()
        if items:
            self._queues[client] = items
        return item

    def take_heads(self, admit: Callable[[object, T], bool | None]) -> list[T]:
        """Under `lock`: offer each client's first item, in turn order, to `admit`: True takes
        it (the client goes to the back of the line), False passes over the client, None stops.
        (Urgent items are not offered: this is for queues without them.)"""
        taken: list[T] = []
        for client in list(self._queues):
            items = self._queues[client]
            verdict = admit(client, items[0])
            if verdict is None:
                break
            if verdict:
                taken.append(items.popleft())
                del self._queues[client]
                if items:
                    self._queues[client] = items
        return taken

    def drop(self, client: object) -> list[T]:
        """Take every queued item of `client` out; return them."""
        with self.lock:
            items = list(self._queues.pop(client, deque()))
            items += [item for owner, item in self._urgent if owner is client]
            self._urgent = deque((o, i) for o, i in self._urgent if o is not client)
            return items

    def close(self) -> list[T]:
        """Accept nothing more; return what was still queued."""
        with self.lock:
            self.closed = True
            items = [item for _, item in self._urgent]
            items += [item for queue in self._queues.values() for item in queue]
            self._queues.clear()
            self._urgent.clear()
            self.lock.notify_all()
            return items

    def clients(self) -> list[object]:
        """The clients with items waiting, in turn order."""
        with self.lock:
            return list(self._queues) + [c for c, _ in self._urgent if c not in self._queues]

    def __contains__(self, client: object) -> bool:
        with self.lock:
            return client in self._queues or any(c is client for c, _ in self._urgent)

    def __len__(self) -> int:
        with self.lock:
            return len(self._urgent) + sum(len(q) for q in self._queues.values())

    def __bool__(self) -> bool:
        return len(self) > 0
