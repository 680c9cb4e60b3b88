"""Shared fixtures: a speech-stage test double, voice folders, and a real server on a socket."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.voices import VoiceProfile, WhisperSpeechParams, load_voices
from wyoming_wsrvc.devtools.loopback import serving
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.speech import IteratorWork, SpeechPiece
from wyoming_wsrvc.metrics import RequestMetrics
from wyoming_wsrvc.models.vocos import VocoderStream
from wyoming_wsrvc.models.whisperspeech.decoding import DecodeBatches
from wyoming_wsrvc.scheduling.scheduler import Scheduler
from wyoming_wsrvc.server.handler import ServerContext

from .studio_world import studio, studio_world  # noqa: F401 - the studio tests' fixtures

REPO = Path(__file__).resolve().parent.parent


class IteratorStage:
    """A test stage that makes its pieces itself (`stream`), begun as the engine begins every
    stage: an `IteratorWork`, one piece per decode turn."""

    def stream(
        self, texts: Sequence[str], language: str, params: WhisperSpeechParams, chunk: int
    ) -> Iterator[SpeechPiece]:
        raise NotImplementedError

    def begin(
        self,
        batches: DecodeBatches,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        metrics: RequestMetrics | None = None,
        generator: torch.Generator | None = None,
    ) -> IteratorWork:
        return IteratorWork(self.stream(texts, language, params, chunk), metrics)


@dataclass
class FakeSpeech(IteratorStage):
    """Test double for the speech stage: a tone whose length and pitch follow the text.

    Deterministic, so tests can compute the exact audio the server must send.
    """

    rate: int = 24000
    max_text_bytes: int = 400
    delay: float = 0.0
    fail_on: str | None = None
    calls: list[str] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def audio_for(self, text: str) -> Audio:
        n = int(self.rate * 0.01 * max(1, len(text)))
        freq = 100.0 + 10.0 * (sum(text.encode()) % 50)
        t = np.arange(n, dtype=np.float32) / self.rate
        return Audio((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), self.rate)

    def synthesize(self, text: str, language: str, params: WhisperSpeechParams) -> Audio:
        with self.lock:
            self.calls.append(text)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in text:
            raise RuntimeError(f"stage exploded on {text!r}")
        audio = self.audio_for(text)
        with self.lock:
            self.done_at.append(time.monotonic())
        return audio

    def stream(
        self, texts: Sequence[str], language: str, params: WhisperSpeechParams, chunk: int
    ) -> Iterator[SpeechPiece]:
        """Each sentence whole, as one piece of audio (a stage that vocodes itself)."""
        for index, text in enumerate(texts):
            yield SpeechPiece(index, audio=self.synthesize(text, language, params))

    def open_vocoder(self) -> VocoderStream:
        raise AssertionError("FakeSpeech yields audio, never codes")


PROFILE_A = """\
name: alice
description: Alice (test)
languages: [en, en_US]
attribution: {name: Tests, url: "http://127.0.0.1/"}
version: "2"
sentence_pause: 0.1
tail_silence: 0.2
"""

PROFILE_B = """\
name: bruno
description: Bruno (test)
languages: [de, de_DE]
output_rate: 16000
sentence_pause: 0.0
tail_silence: 0.0
"""


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "voices"
    folder.mkdir()
    (folder / "alice.yaml").write_text(PROFILE_A)
    (folder / "bruno.yaml").write_text(PROFILE_B)
    return folder


@pytest.fixture
def voices(voices_dir: Path) -> dict[str, VoiceProfile]:
    return load_voices(voices_dir)


@dataclass
class RunningServer:
    host: str
    port: int
    speech: FakeSpeech
    pipeline: Pipeline
    scheduler: Scheduler
    voices: dict[str, VoiceProfile]
    context: ServerContext

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient(self.host, self.port)


ServerFactory = Callable[..., "contextlib.AbstractAsyncContextManager[RunningServer]"]


@pytest.fixture
def server_factory(voices: dict[str, VoiceProfile]) -> ServerFactory:
    @contextlib.asynccontextmanager
    async def start(
        speech: FakeSpeech | None = None,
        streaming: bool = True,
        idle_timeout: float = 30.0,
        max_text_length: int = 10_000,
        samples_per_chunk: int = 1024,
    ) -> AsyncIterator[RunningServer]:
        speech = speech or FakeSpeech()
        pipeline = Pipeline(speech)
        context = server_context(
            pipeline,
            voices,
            "alice",
            streaming,
            samples_per_chunk=samples_per_chunk,
            max_text_length=max_text_length,
            idle_timeout=idle_timeout,
        )
        async with serving(context) as port:
            yield RunningServer(
                "127.0.0.1", port, speech, pipeline, context.scheduler, voices, context
            )

    return start


def server_context(
    pipeline: Pipeline,
    voices: dict[str, VoiceProfile],
    default_voice: str,
    streaming: bool = True,
    **options: Any,
) -> ServerContext:
    """What the server's start-up builds around a pipeline (`ServerContext.wire`)."""
    return ServerContext.wire(pipeline, voices, default_voice, streaming, **options)


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until `condition()` holds (checked every 10 ms); fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.01)


async def read_until(
    client: AsyncTcpClient, stop_types: set[str], timeout: float = 20.0
) -> list[Event]:
    """Read events until one of `stop_types` (inclusive) or end of stream."""
    events: list[Event] = []
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        if event is None:
            return events
        events.append(event)
        if event.type in stop_types:
            return events


async def read_all(client: AsyncTcpClient, timeout: float = 20.0) -> list[Event]:
    """Read until the server closes the connection."""
    return await read_until(client, set(), timeout)
