"""Bad input and faults through a real socket: the server answers or refuses, never hangs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from wyoming.error import Error
from wyoming.event import Event
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeVoice,
)

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.voices import (
    RvcParams,
    VoiceProfile,
    WhisperSpeechParams,
)
from wyoming_wsrvc.engine.cache import PhraseCache
from wyoming_wsrvc.engine.conversion import RvcConverter
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.utterance import PcmAudio
from wyoming_wsrvc.models.rvc.content import ContentModels
from wyoming_wsrvc.text.normalize import Normalizer

from .conftest import REPO, FakeSpeech, ServerFactory, eventually, read_all, read_until


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


async def test_odd_text_is_spoken_not_crashed(server_factory: ServerFactory) -> None:
    texts = [
        "Null\x00 bytes\x07 and\x1b[31m escapes.",
        "Emoji only 😀🎉🏠. Then words.",
        "Mixed scripts: Привет, 你好, مرحبا, שלום.",
        "\u202eRight-to-left override\u200b and zero width.",
        "😀😀😀",
        "a" * 3000,
    ]
    async with server_factory() as srv:
        srv.pipeline.normalize = Normalizer()
        for text in texts:
            async with srv.client() as client:
                await client.write_event(Synthesize(text=text).event())
                events = await read_until(client, {"audio-stop", "error"})
            assert events[-1].type == "audio-stop", (text, events[-1])
        assert not any(re.search(r"[\x00-\x1f\u200b\u202e😀]", call) for call in srv.speech.calls)
        assert all(len(call.encode()) <= srv.speech.max_text_bytes for call in srv.speech.calls)


async def test_unsupported_language_falls_back(server_factory: ServerFactory) -> None:
    async with server_factory() as srv, srv.client() as client:
        voice = {"name": "alice", "language": "tlh"}
        await client.write_event(Event("synthesize", {"text": "Qapla.", "voice": voice}))
        events = await read_until(client, {"audio-stop", "error"})
    assert events[-1].type == "audio-stop"


async def test_client_names_are_never_paths(server_factory: ServerFactory) -> None:
    async with server_factory() as srv:
        for name in ("../../etc/passwd", "/etc/passwd", "alice/../bruno", "alice\x00"):
            async with srv.client() as client:
                await client.write_event(
                    Synthesize(text="Hi.", voice=SynthesizeVoice(name=name)).event()
                )
                events = await read_until(client, {"audio-stop", "error"})
            assert events[-1].type == "audio-stop"  # spoken by the default voice, nothing read
        assert srv.speech.calls == ["Hi."] * 4


def _rss_mb() -> float:
    """The process's resident memory now (not its peak: growth around some work is measured)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_huge_claims_are_refused_without_reading(server_factory: ServerFactory) -> None:
    async with server_factory(FakeSpeech(delay=0.2)) as srv, srv.client() as busy:
        await busy.write_event(Synthesize(text="Someone else is being served. Still.").event())
        before = _rss_mb()
        claims = [
            {"type": "synthesize", "payload_length": 2_000_000_000},
            {"type": "synthesize", "data_length": 2_000_000_000},
        ]
        for claim in claims:
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            writer.write(json.dumps(claim).encode() + b"\n" + b"x" * 65536)
            await writer.drain()
            start = time.monotonic()
            data = await asyncio.wait_for(reader.read(), 5)
            assert time.monotonic() - start < 2
            assert b"protocol-error" in data
            writer.close()
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"{" + b" " * 70_000)  # a header line over the 64 KiB limit
        await writer.drain()
        assert b"protocol-error" in await asyncio.wait_for(reader.read(), 5)
        writer.close()
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(bytes(range(256)) * 20 + b"\n")
        await writer.drain()
        assert b"protocol-error" in await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert _rss_mb() - before < 100
        events = await read_until(busy, {"audio-stop"})  # the other client was unaffected
        assert events[-1].type == "audio-stop"


TEN_SENTENCES = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten."


async def test_disconnect_leaves_no_tasks(server_factory: ServerFactory) -> None:
    async with server_factory(FakeSpeech(delay=0.2)) as srv:
        baseline = len(asyncio.all_tasks())
        for streaming in (False, True):
            async with srv.client() as client:
                if streaming:
                    await client.write_event(SynthesizeStart().event())
                    await client.write_event(
                        SynthesizeChunk(text="One. Two. Three. Four. Five").event()
                    )
                else:
                    await client.write_event(
                        Synthesize(text="One. Two. Three. Four. Five.").event()
                    )
                await read_until(client, {"audio-chunk"})
        await eventually(lambda: not srv.scheduler.pending() and srv.scheduler.decoder.idle())
        await asyncio.sleep(0)  # the connections' tasks end on the loop's next turn
        assert srv.scheduler.pending() == 0
        assert len(asyncio.all_tasks()) <= baseline
        # Of 2 × 10 sentences, at most the first and the batch of 3 that was running, per request.
        assert len(srv.speech.calls) <= 8, srv.speech.calls


@dataclass
class ExplodingSpeech(FakeSpeech):
    error: type[BaseException] = torch.OutOfMemoryError

    def synthesize(self, text: str, language: str, params: WhisperSpeechParams) -> Audio:
        if "explode" in text:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().synthesize(text, language, params)


async def test_out_of_memory_is_reported_and_caches_freed(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    async with server_factory(ExplodingSpeech()) as srv:
        async with srv.client() as client:
            await client.write_event(Synthesize(text="Fine. Now explode.").event())
            events = await read_all(client)
        assert types(events)[-1] == "error"
        assert Error.from_event(events[-1]).code == "out-of-memory"
        assert freed
        async with srv.client() as client:
            await client.write_event(Synthesize(text="Still works.").event())
            assert (await read_until(client, {"audio-stop"}))[-1].type == "audio-stop"


async def test_broken_voice_reports_errors_others_work(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    model = tmp_path / "broken.pth"
    model.write_bytes(b"x")
    async with server_factory() as srv:
        # a real conversion stage; the voice file broke after start-up (nothing loaded yet)
        srv.pipeline.converter = RvcConverter(ContentModels(), {}, torch.device("cpu"))
        catalog = srv.context.catalog
        alice = catalog.voices["alice"]
        broken = VoiceProfile(**{**alice.__dict__, "name": "broken", "rvc": RvcParams(model=model)})
        catalog._formats[broken] = catalog.format(alice)  # as start-up would
        catalog.offer(broken)
        async with srv.client() as client:
            await client.write_event(
                Synthesize(text="Hi.", voice=SynthesizeVoice(name="broken")).event()
            )
            events = await read_all(client)
        assert Error.from_event(events[-1]).code == "voice-unavailable"
        assert "broken.pth" in Error.from_event(events[-1]).text
        async with srv.client() as client:
            await client.write_event(
                Synthesize(text="Hi.", voice=SynthesizeVoice(name="alice")).event()
            )
            assert (await read_until(client, {"audio-stop"}))[-1].type == "audio-stop"


def test_phrase_cache_answers_repeats(voices: dict[str, VoiceProfile]) -> None:
    speech = FakeSpeech(delay=0.3)
    pipeline = Pipeline(speech, cache=PhraseCache[PcmAudio](8))
    first = pipeline.synthesize_sentence("Good morning.", voices["alice"])
    again = pipeline.synthesize_sentence("Good morning.", voices["alice"])
    assert again == first  # answered from the cache: the stage was not called again
    assert speech.calls == ["Good morning."]
    pipeline.synthesize_sentence("Good morning.", voices["bruno"])  # another voice: not a hit
    assert len(speech.calls) == 2
    uncached = Pipeline(speech)
    uncached.synthesize_sentence("Good morning.", voices["alice"])
    assert len(speech.calls) == 3


def test_phrase_cache_is_bounded() -> None:
    cache = PhraseCache[PcmAudio](max_entries=3, max_bytes=1000)
    for i in range(10):
        cache.put(i, PcmAudio(b"\0" * 300, 16000))
    assert len(cache) == 3
    assert cache.size_bytes == 900
    assert cache.get(0) is None
    cache.put("big", PcmAudio(b"\0" * 2000, 16000))
    assert cache.get("big") is None


def test_every_torch_load_refuses_code() -> None:
    """(Shell, eval and exec are ruff's `S` rules, which CI runs over the package.)"""
    package = REPO / "wyoming_wsrvc"
    for path in package.rglob("*.py"):
        source = path.read_text()
        for match in re.finditer(r"torch\.load\(", source):
            call = source[match.start() : match.start() + 160]
            assert "weights_only=True" in call, (path, call)
        assert "allow_pickle=True" not in source
