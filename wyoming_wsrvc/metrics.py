"""Per-request metrics: what a request cost, stage by stage, for one INFO line when it ends.

Stages report their time with `record(stage, seconds)`; it goes to the request whose work the
calling thread is doing (`collecting`), and costs nothing when no request is being collected
(warm-up, tools). The scheduler sets the collector on its worker threads; the handler owns the
`RequestMetrics` and logs `line()` after the request's last audio.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# The order stages appear in the line: an upstream TTS (layer mode), T2S, S2A (the rest of
# decoding), then the audio side.
STAGES = ("upstream", "t2s", "s2a", "vocoder", "rvc", "resample")

_current = threading.local()


@dataclass
class RequestMetrics:
    """One request (a `synthesize`, or one stream): counted on the event loop, stage times
    added from the worker threads."""

    voice: str
    started: float = field(default_factory=time.monotonic)
    characters: int = 0
    sentences: int = 0
    first_audio: float | None = None  # seconds from `started`
    hold: float = 0.0  # seconds ready audio was held back so the listener never runs dry
    audio_samples: int = 0
    audio_rate: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def audio(self, data: bytes, rate: int, width: int = 2) -> None:
        """Audio was sent to the client."""
        if self.first_audio is None:
            self.first_audio = time.monotonic() - self.started
        self.audio_samples += len(data) // width
        self.audio_rate = rate

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / self.audio_rate if self.audio_rate else 0.0

    def line(self) -> str:
        """`voice …: N chars, N sentences, first audio … (held …), total …, audio …, RTF …
        (stages)`; `held` only when the answer was paced (`pacing`)."""
        total = time.monotonic() - self.started
        with self._lock:
            stages = dict(self.stages)
        speech = stages.pop("speech", 0.0)  # all of decoding; T2S is reported on its own
        if speech:
            stages["s2a"] = max(0.0, speech - stages.get("t2s", 0.0))
        named = [f"{stage} {stages[stage]:.2f} s" for stage in STAGES if stage in stages]
        first = "-" if self.first_audio is None else f"{self.first_audio:.2f} s"
        if self.hold:
            first += f" (held {self.hold:.2f} s)"
        rtf = f"{total / self.audio_seconds:.2f}" if self.audio_seconds else "-"
        return (
            f"voice {self.voice}: {self.characters} chars, {self.sentences} sentence(s), "
            f"first audio {first}, total {total:.2f} s, audio {self.audio_seconds:.2f} s, "
            f"RTF {rtf} ({', '.join(named) or 'phrase cache'})"
        )


@contextlib.contextmanager
def collecting(metrics: RequestMetrics | None) -> Iterator[None]:
    """Stage times recorded by this thread inside the block go to `metrics`."""
    previous = getattr(_current, "metrics", None)
    _current.metrics = metrics
    try:
        yield
    finally:
        _current.metrics = previous


def record(stage: str, seconds: float) -> None:
    """Add `seconds` of `stage` to the request this thread works for (if any)."""
    metrics: RequestMetrics | None = getattr(_current, "metrics", None)
    if metrics is not None:
        metrics.add(stage, seconds)


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """`record` the time the block takes."""
    start = time.perf_counter()
    try:
        yield
    finally:
        record(stage, time.perf_counter() - start)
