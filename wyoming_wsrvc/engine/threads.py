"""The thread plan: how many CPU threads each kind of work may use, so the process never
oversubscribes the cores it has (`--threads`, default: the cores this process may run on).

Batch-1 decoding (T2S, S2A) is bound by reading weights: a second thread buys ~25 % with int8
weights and nothing with float32, while OpenMP threads that spin against another busy process
make it 3-12x slower. So decoding gets one thread of its own (two from four cores up), and the
audio side (Vocos, RVC: convolutions that do scale) gets the rest, on its own worker thread, so
the two stages run at the same time instead of fighting over one matrix product. With a single
thread there is no overlap: one worker does both, one after the other.

torch's intra-op thread count is per calling thread (OpenMP's per-thread setting): each worker
thread sets its own at its start with `use`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..config.voices import VoiceProfile


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as containers and taskset set it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """Threads for decoding and for the audio stages; `overlap`: they run at the same time.
    `audio` is the audio side's share while the decode side works; `total` its share when the
    decode side has nothing to do. `decodes`: some profile decodes WhisperSpeech (else the
    decode thread only reads upstreams: no model work)."""

    total: int
    decode: int
    audio: int
    overlap: bool
    decodes: bool = True

    @classmethod
    def for_threads(
        cls, threads: int | None = None, decodes: bool = True, upstream_here: bool = False
    ) -> ThreadPlan:
        """`decodes`: a profile speaks with WhisperSpeech; `upstream_here`: a layer profile's
        upstream runs on this host (then `audio` is the share while such an upstream, measured
        slow, answers: `UpstreamSpeech.occupies_core`; a fast one shares every core)."""
        total = max(1, threads or available_cores())
        if not decodes:  # layer mode only: the decode thread reads sockets, no model work
            return cls(total, 1, max(1, total - 1) if upstream_here else total, True, False)
        if total == 1:
            return cls(1, 1, 1, overlap=False)
        decode = 2 if total >= 4 else 1
        return cls(total, decode, total - decode, overlap=True)

    @classmethod
    def for_profiles(cls, threads: int | None, profiles: Iterable[VoiceProfile]) -> ThreadPlan:
        """The plan for what these profiles need (`for_threads`)."""
        profiles = list(profiles)
        return cls.for_threads(
            threads,
            decodes=any(p.upstream is None for p in profiles) or not profiles,
            upstream_here=any(p.upstream is not None and p.upstream.same_host for p in profiles),
        )

    @property
    def peak(self) -> int:
        """The most threads running model work at one moment."""
        if not self.decodes:
            return self.total
        return self.decode + self.audio if self.overlap else max(self.decode, self.audio)

    def audio_now(self, decoding: bool, upstream_busy: bool = False) -> int:
        """The audio side's threads at this moment: its share (`audio`) while the decode side
        keeps a core busy (it decodes WhisperSpeech, or reads an upstream on this host that was
        measured slow: `upstream_busy`), else every thread (`total`)."""
        busy = decoding and (self.decodes or upstream_busy)
        return self.audio if busy else self.total

    def describe(self) -> str:
        if not self.decodes:
            shared = (
                f" ({self.audio} while a slow upstream on this host answers)"
                if self.audio < self.total
                else ""
            )
            return f"{self.total} threads: no WhisperSpeech to decode; audio {self.total}{shared}"
        if not self.overlap:
            return "1 thread: decoding and audio one after the other"
        return f"{self.total} threads: decoding {self.decode}, audio {self.audio}, overlapped"


def use(threads: int) -> None:
    """Set the calling thread's intra-op thread count."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
