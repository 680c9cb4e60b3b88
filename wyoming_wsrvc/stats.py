"""Server-wide counters and histograms (requests, errors, first audio, RTF, decode batch rows),
rendered in Prometheus' text exposition format (version 0.0.4) by `render`.

Filled from the event loop (requests) and the decode thread (rows per step), so every update
takes a lock; nothing here knows about HTTP.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .metrics import RequestMetrics

Labels = tuple[tuple[str, str], ...]

FIRST_AUDIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
ROW_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Labels = ()) -> str:
    pairs = labels + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Counter:
    name: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, labels: Labels = (), by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(labels)} {_number(value)}"


@dataclass
class _Series:
    counts: list[int]
    total: float = 0.0
    count: int = 0


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    series: dict[Labels, _Series] = field(default_factory=dict)

    def observe(self, value: float, labels: Labels = ()) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series([0] * len(self.buckets))
        for number, bound in enumerate(self.buckets):
            if value <= bound:
                series.counts[number] += 1
        series.total += value
        series.count += 1

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, series in sorted(self.series.items()):
            for bound, count in zip(self.buckets, series.counts, strict=True):
                le = (("le", _number(bound)),)
                yield f"{self.name}_bucket{_labels(labels, le)} {count}"
            yield f"{self.name}_bucket{_labels(labels, (('le', '+Inf'),))} {series.count}"
            yield f"{self.name}_sum{_labels(labels)} {_number(series.total)}"
            yield f"{self.name}_count{_labels(labels)} {series.count}"


class ServerStats:
    """What `/metrics` shows; one per server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = Counter(
            "wsrvc_requests_total", "Speech requests answered, by voice and API (wyoming, http)."
        )
        self.errors = Counter(
            "wsrvc_errors_total", "Requests refused or failed, by error code and API."
        )
        self.first_audio = Histogram(
            "wsrvc_first_audio_seconds",
            "Seconds from a request to its first audio sent, by voice.",
            FIRST_AUDIO_BUCKETS,
        )
        self.rtf = Histogram(
            "wsrvc_real_time_factor",
            "Seconds a request took per second of audio it sent (below 1: faster than real "
            "time), by voice.",
            RTF_BUCKETS,
        )
        self.rows = Histogram(
            "wsrvc_decode_rows", "Sentences decoded together in one decode step.", ROW_BUCKETS
        )
        self.audio_seconds = Counter(
            "wsrvc_audio_seconds_total", "Seconds of audio sent, by voice."
        )

    def finished(self, metrics: RequestMetrics, api: str) -> None:
        """A request ended now (its metrics as sent)."""
        total = time.monotonic() - metrics.started
        voice = (("voice", metrics.voice),)
        with self._lock:
            self.requests.inc((*voice, ("api", api)))
            if metrics.first_audio is not None:
                self.first_audio.observe(metrics.first_audio, voice)
            if metrics.audio_seconds > 0:
                self.rtf.observe(total / metrics.audio_seconds, voice)
                self.audio_seconds.inc(voice, metrics.audio_seconds)

    def error(self, code: str, api: str) -> None:
        with self._lock:
            self.errors.inc((("code", code), ("api", api)))

    def decode_step(self, rows: int) -> None:
        with self._lock:
            self.rows.observe(float(rows))

    def render(self, gauges: Mapping[str, tuple[str, float]]) -> str:
        """The exposition text; `gauges`: name → (help, value) read at scrape time."""
        lines: list[str] = []
        with self._lock:
            for metric in (
                self.requests,
                self.errors,
                self.audio_seconds,
                self.first_audio,
                self.rtf,
                self.rows,
            ):
                lines += metric.lines()
        for name, (text, value) in gauges.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
        return "\n".join(lines) + "\n"
