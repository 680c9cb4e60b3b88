"""The Wyoming contract, through a real TCP socket, replaying Home Assistant's sequences."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from wyoming_wsrvc.audio import Audio, resample, to_pcm16
from wyoming_wsrvc.config.voices import WhisperSpeechParams
from wyoming_wsrvc.server import handler

from .conftest import FakeSpeech, ServerFactory, eventually, read_all, read_until


def expected_pcm(
    speech: FakeSpeech, sentences: list[str], pause: float, tail: float, rate: int = 24000
) -> bytes:
    pieces: list[Audio] = []
    for i, sentence in enumerate(sentences):
        if i:
            pieces.append(Audio.silence(pause, rate))
        pieces.append(resample(speech.audio_for(sentence), rate))
    pieces.append(Audio.silence(tail, rate))
    return b"".join(to_pcm16(p) for p in pieces)


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def collapse(seq: list[str]) -> list[str]:
    """Collapse runs of audio-chunk into one entry, for sequence assertions."""
    out: list[str] = []
    for t in seq:
        if t == "audio-chunk" and out and out[-1] == "audio-chunk":
            continue
        out.append(t)
    return out


def audio_of(events: list[Event]) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))


def formats(events: list[Event]) -> set[tuple[int, int, int]]:
    out = set()
    for e in events:
        if AudioChunk.is_type(e.type):
            c = AudioChunk.from_event(e)
            out.add((c.rate, c.width, c.channels))
        elif AudioStart.is_type(e.type):
            s = AudioStart.from_event(e)
            out.add((s.rate, s.width, s.channels))
    return out


async def test_info_lists_every_profile(server_factory: ServerFactory) -> None:
    async with server_factory() as srv, srv.client() as client:
        await client.write_event(Describe().event())
        events = await read_until(client, {"info"})
        info = Info.from_event(events[-1])
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.installed
    assert program.supports_synthesize_streaming
    voices = {v.name: v for v in program.voices}
    assert set(voices) == {"alice", "bruno"}
    assert voices["alice"].languages == ["en", "en_US"]
    assert voices["alice"].description == "Alice (test)"
    assert voices["alice"].version == "2"
    assert voices["alice"].attribution.url == "http://127.0.0.1/"
    assert voices["bruno"].languages == ["de", "de_DE"]
    assert all(v.installed for v in voices.values())


async def test_no_streaming_only_changes_info(server_factory: ServerFactory) -> None:
    async with server_factory(streaming=False) as srv:
        async with srv.client() as client:
            await client.write_event(Describe().event())
            info = Info.from_event((await read_until(client, {"info"}))[-1])
        assert not info.tts[0].supports_synthesize_streaming
        async with srv.client() as client:  # streaming events are still answered
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="Hi there.").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, {"synthesize-stopped"})
        assert types(events)[-1] == "synthesize-stopped"
        assert audio_of(events)


@dataclass
class HeldSpeech(FakeSpeech):
    """A stage that stays inside its work until `release` is set (and says when it is in)."""

    inside: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def synthesize(self, text: str, language: str, params: WhisperSpeechParams) -> Audio:
        self.inside.set()
        assert self.release.wait(30)
        return super().synthesize(text, language, params)


async def test_describe_is_answered_while_synthesis_runs(server_factory: ServerFactory) -> None:
    """Model work never blocks the protocol: while the stage is stuck inside a sentence, other
    connections and the busy one itself are answered."""
    speech = HeldSpeech()
    async with server_factory(speech) as srv, srv.client() as busy:
        await busy.write_event(Synthesize(text="One long sentence. And another one.").event())
        assert await asyncio.to_thread(speech.inside.wait, 10)
        try:
            for _ in range(3):
                async with srv.client() as client:
                    await client.write_event(Describe().event())
                    events = await read_until(client, {"info"}, timeout=5)
                assert events[-1].type == "info"
            await busy.write_event(Describe().event())  # same connection, too
            events = await read_until(busy, {"info"}, timeout=5)
            assert events[-1].type == "info"
            assert not speech.done_at  # all of it while the stage was still working
        finally:
            speech.release.set()
        assert (await read_until(busy, {"audio-stop"}))[-1].type == "audio-stop"


async def test_one_sentence_sequence(server_factory: ServerFactory) -> None:
    async with server_factory() as srv, srv.client() as client:
        await client.write_event(Synthesize(text="Hello world.").event())
        events = await read_until(client, {"audio-stop"})
    assert collapse(types(events)) == ["audio-start", "audio-chunk", "audio-stop"]
    assert formats(events) == {(24000, 2, 1)}
    assert audio_of(events) == expected_pcm(srv.speech, ["Hello world."], 0.1, 0.2)
    chunk_sizes = [len(AudioChunk.from_event(e).audio) for e in events if e.type == "audio-chunk"]
    assert max(chunk_sizes) == 2048
    assert all(0 < size <= 2048 for size in chunk_sizes)


async def test_multi_sentence_sequence_in_order_and_early(server_factory: ServerFactory) -> None:
    text = "First sentence here. Second one is longer than the first. Third!"
    sentences = ["First sentence here.", "Second one is longer than the first.", "Third!"]
    async with server_factory(FakeSpeech(delay=0.4)) as srv, srv.client() as client:
        await client.write_event(Synthesize(text=text).event())
        first = await read_until(client, {"audio-chunk"})
        first_chunk_at = time.monotonic()
        rest = await read_until(client, {"audio-stop"})
    events = first + rest
    assert collapse(types(events)) == ["audio-start", "audio-chunk", "audio-stop"]
    assert srv.speech.calls == sentences
    assert audio_of(events) == expected_pcm(srv.speech, sentences, 0.1, 0.2)
    # The first chunk went out before the last sentence was synthesized.
    assert first_chunk_at < srv.speech.done_at[-1]


async def test_bruno_uses_its_output_rate(server_factory: ServerFactory) -> None:
    async with server_factory() as srv, srv.client() as client:
        await client.write_event(
            Synthesize(text="Guten Tag. Wie geht's?", voice=SynthesizeVoice(name="bruno")).event()
        )
        events = await read_until(client, {"audio-stop"})
    assert formats(events) == {(16000, 2, 1)}
    assert audio_of(events) == expected_pcm(
        srv.speech, ["Guten Tag.", "Wie geht's?"], 0.0, 0.0, rate=16000
    )


async def test_streaming_sequence_like_home_assistant(server_factory: ServerFactory) -> None:
    chunks = ["Hello wor", "ld. How are", " you today? I am", " fine"]
    full = "".join(chunks)
    sentences = ["Hello world.", "How are you today?", "I am fine"]
    async with server_factory() as srv, srv.client() as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="alice")).event())
        for chunk in chunks:
            await client.write_event(SynthesizeChunk(text=chunk).event())
        await client.write_event(Synthesize(text=full, voice=SynthesizeVoice(name="alice")).event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, {"synthesize-stopped"})
    assert collapse(types(events)) == ["audio-start", "audio-chunk", "audio-stop"] * 3 + [
        "synthesize-stopped"
    ]
    assert srv.speech.calls == sentences  # the compatibility synthesize was not spoken
    assert formats(events) == {(24000, 2, 1)}
    assert audio_of(events) == expected_pcm(srv.speech, sentences, 0.1, 0.2)


async def test_streaming_speaks_before_the_stream_ends(server_factory: ServerFactory) -> None:
    async with server_factory() as srv, srv.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="The first sentence is done. And").event())
        first = await read_until(client, {"audio-chunk"}, timeout=5)
        assert types(first) == ["audio-start", "audio-chunk"]
        await client.write_event(SynthesizeChunk(text=" the rest.").event())
        await client.write_event(SynthesizeStop().event())
        rest = await read_until(client, {"synthesize-stopped"})
    assert srv.speech.calls == ["The first sentence is done.", "And the rest."]
    assert rest[-1].type == "synthesize-stopped"


async def test_empty_stream_and_empty_text(server_factory: ServerFactory) -> None:
    async with server_factory() as srv:
        async with srv.client() as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(Synthesize(text="").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, {"synthesize-stopped"})
        # Home Assistant writes its WAV header from audio-start: an empty answer still has one
        assert collapse(types(events)) == [
            "audio-start", "audio-chunk", "audio-stop", "synthesize-stopped"
        ]  # fmt: skip
        assert audio_of(events) == expected_pcm(srv.speech, [], 0.1, 0.2)
        async with srv.client() as client:
            await client.write_event(Synthesize(text="   \n ").event())
            events = await read_until(client, {"audio-stop"})
        assert collapse(types(events)) == ["audio-start", "audio-chunk", "audio-stop"]
        assert audio_of(events) == expected_pcm(srv.speech, [], 0.1, 0.2)
        assert srv.speech.calls == []


async def test_ssml_is_stripped(server_factory: ServerFactory) -> None:
    ssml = '<speak>Hello <emphasis>there</emphasis>.<break time="1s"/>Bye &amp; thanks.</speak>'
    async with server_factory() as srv, srv.client() as client:
        await client.write_event(Event("synthesize", {"text": ssml, "text_format": "ssml"}))
        await read_until(client, {"audio-stop"})
    assert srv.speech.calls == ["Hello there.", "Bye & thanks."]


async def test_unknown_voice_speaks_with_the_default(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Home Assistant 2026.2 drops `error` events, so an error would be silence: an unknown
    voice is spoken with the default voice, and the log says so once per name."""
    async with server_factory() as srv:
        for _ in range(2):
            async with srv.client() as client:
                await client.write_event(
                    Synthesize(text="Hi.", voice=SynthesizeVoice(name="nope")).event()
                )
                events = await read_until(client, {"audio-stop"})
            assert audio_of(events) == expected_pcm(srv.speech, ["Hi."], 0.1, 0.2)
        async with srv.client() as client:  # and in a stream
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="gone")).event())
            await client.write_event(SynthesizeChunk(text="Hi.").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, {"synthesize-stopped"})
        assert audio_of(events) == expected_pcm(srv.speech, ["Hi."], 0.1, 0.2)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "Unknown voice 'nope' requested; speaking with 'alice' instead. Voices: alice, bruno",
        "Unknown voice 'gone' requested; speaking with 'alice' instead. Voices: alice, bruno",
    ]


async def test_ssml_in_a_stream_is_not_read_aloud(server_factory: ServerFactory) -> None:
    """Home Assistant streams every request and never says `text_format`; tags, entities and
    comments may be split anywhere between chunks."""
    ssml = (
        '<speak>Hello <emphasis level="strong">there</emphasis>.<break time="3s"/>'
        'Bye &amp; <sub alias="thank you">thx</sub>.<!-- a note --></speak>'
    )
    plain = ["Hello there.", "Bye & thank you."]
    for size in (1, 2, 3, 5, 7, len(ssml)):
        chunks = [ssml[i : i + size] for i in range(0, len(ssml), size)]
        async with server_factory() as srv, srv.client() as client:
            await client.write_event(SynthesizeStart().event())
            for chunk in chunks:
                await client.write_event(SynthesizeChunk(text=chunk).event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, {"synthesize-stopped"})
        assert srv.speech.calls == plain, size
        assert audio_of(events) == expected_pcm(srv.speech, plain, 0.1, 0.2)
    async with server_factory() as srv, srv.client() as client:  # text that is not SSML
        await client.write_event(SynthesizeStart().event())
        for chunk in ["<", "3 is a heart", ". Fine."]:
            await client.write_event(SynthesizeChunk(text=chunk).event())
        await client.write_event(SynthesizeStop().event())
        await read_until(client, {"synthesize-stopped"})
    assert srv.speech.calls == ["<3 is a heart.", "Fine."]


async def test_malformed_events(server_factory: ServerFactory) -> None:
    async with server_factory() as srv:
        bad_events = [
            Event("synthesize", {}),
            Event("synthesize", {"text": 42}),
            Event("synthesize", {"text": "hi", "voice": "alice"}),
            Event("synthesize-start", {"voice": {"name": 3}}),
        ]
        for bad in bad_events:
            async with srv.client() as client:
                await client.write_event(bad)
                events = await read_all(client)
            assert types(events) == ["error"], bad
            assert Error.from_event(events[0]).code == "invalid-event"
        for raw in (
            b"not json\n",
            b'{"type": "synthesize", "data_length": "x"}\n',
            b'{"type": "synthesize", "payload_length": 2000000000}\n',
            b"[1, 2]\n",
        ):
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            writer.write(raw)
            await writer.drain()
            header = await asyncio.wait_for(reader.readline(), 5)
            assert json.loads(header)["type"] == "error", raw
            rest = await asyncio.wait_for(reader.read(), 5)  # returns only once the server closes
            assert b"audio" not in rest
            writer.close()
        async with srv.client() as client:
            await client.write_event(Event("select-program", {"name": "x"}))  # unknown: ignored
            await client.write_event(Synthesize(text="Still fine.").event())
            events = await read_until(client, {"audio-stop"})
        assert events[-1].type == "audio-stop"


async def test_stage_failure_is_an_error_event(server_factory: ServerFactory) -> None:
    async with server_factory(FakeSpeech(fail_on="boom")) as srv:
        async with srv.client() as client:
            await client.write_event(Synthesize(text="Fine. This goes boom. Never said.").event())
            events = await read_all(client)
        assert types(events)[-1] == "error"
        error = Error.from_event(events[-1])
        assert error.code == "synthesis-failed"
        assert "boom" in error.text
        async with srv.client() as client:
            await client.write_event(Synthesize(text="Next request.").event())
            events = await read_until(client, {"audio-stop"})
        assert events[-1].type == "audio-stop"


async def test_client_disconnect_drops_its_work(server_factory: ServerFactory) -> None:
    text = " ".join(f"Sentence number {i}." for i in range(8))
    async with server_factory(FakeSpeech(delay=0.3)) as srv:
        async with srv.client() as client:
            await client.write_event(Synthesize(text=text).event())
            await read_until(client, {"audio-chunk"})
        await eventually(lambda: not srv.scheduler.pending() and srv.scheduler.decoder.idle())
        # At most the batch that was running (3 sentences) after the first one.
        assert len(srv.speech.calls) <= 4, srv.speech.calls
        async with srv.client() as client:  # the server still serves
            await client.write_event(Synthesize(text="After.").event())
            events = await read_until(client, {"audio-stop"})
        assert events[-1].type == "audio-stop"


async def test_several_clients_at_once(server_factory: ServerFactory) -> None:
    async with server_factory(FakeSpeech(delay=0.05)) as srv:

        async def one(i: int) -> tuple[list[str], bytes]:
            sentences = [f"Client {i} says hello.", f"Client {i} says bye."]
            async with srv.client() as client:
                if i % 2:
                    await client.write_event(Synthesize(text=" ".join(sentences)).event())
                    events = await read_until(client, {"audio-stop"})
                    return sentences, audio_of(events)
                await client.write_event(SynthesizeStart().event())
                await client.write_event(SynthesizeChunk(text=" ".join(sentences)).event())
                await client.write_event(SynthesizeStop().event())
                events = await read_until(client, {"synthesize-stopped"})
                return sentences, audio_of(events)

        results = await asyncio.gather(*(one(i) for i in range(6)))
    for sentences, audio in results:
        assert audio == expected_pcm(srv.speech, sentences, 0.1, 0.2)


async def test_text_over_the_limit(server_factory: ServerFactory) -> None:
    async with server_factory(max_text_length=20) as srv, srv.client() as client:
        await client.write_event(Synthesize(text="x" * 21).event())
        events = await read_all(client)
    assert types(events) == ["error"]
    assert Error.from_event(events[0]).code == "text-too-long"


async def test_idle_connection_is_closed(server_factory: ServerFactory) -> None:
    async with server_factory(idle_timeout=0.3) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_pause_in_an_open_stream_is_not_idle(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An LLM that pauses mid-answer (a tool call) for longer than the idle timeout still gets
    its whole answer; a stream silent for `STREAM_IDLE_LIMIT` is a client that is gone."""
    async with server_factory(idle_timeout=0.2) as srv:
        async with srv.client() as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="First part. S").event())
            await read_until(client, {"audio-chunk"})
            await asyncio.sleep(1.0)  # five idle timeouts
            await client.write_event(SynthesizeChunk(text="econd part.").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, {"synthesize-stopped"})
        assert srv.speech.calls == ["First part.", "Second part."]
        assert events[-1].type == "synthesize-stopped"
        monkeypatch.setattr(handler, "STREAM_IDLE_LIMIT", 0.5)
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        await async_write_event(SynthesizeStart().event(), writer)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started >= 0.5
        writer.close()


async def test_healthcheck_does_a_real_round_trip(server_factory: ServerFactory) -> None:
    from wyoming_wsrvc.server.healthcheck import check

    async with server_factory() as srv:
        assert await check(f"tcp://{srv.host}:{srv.port}", 5)


def test_healthcheck_asks_where_the_running_server_listens(tmp_path: Path) -> None:
    """A container's HEALTHCHECK has no flags: it reads the server process's own (its command
    line after $WYOMING_WSRVC_ARGS, as the server reads them), a wildcard host asked on
    loopback."""
    from wyoming_wsrvc.server.healthcheck import server_uri

    def process(pid: int, cmdline: list[str], env: dict[str, str]) -> None:
        folder = tmp_path / str(pid)
        folder.mkdir()
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
        (folder / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in env.items()))

    assert server_uri(tmp_path) == "tcp://127.0.0.1:10210"  # no server: the default
    process(1, ["/bin/sh", "/app/config/docker-entrypoint.sh", "--uri", "tcp://0.0.0.0:9"], {})
    process(
        7,
        ["python", "-m", "wyoming_wsrvc", "--data-dir", "/data", "--uri", "tcp://0.0.0.0:10555"],
        {"PATH": "/bin"},
    )
    assert server_uri(tmp_path) == "tcp://127.0.0.1:10555"
    (tmp_path / "7" / "environ").write_bytes(b"WYOMING_WSRVC_ARGS=--uri tcp://[::]:10777\0")
    assert server_uri(tmp_path) == "tcp://127.0.0.1:10555"  # the command line comes after
    process(8, ["/opt/venv/bin/wyoming-wsrvc", "--zeroconf"], {})
    (tmp_path / "7").rename(tmp_path / "70")
    process(7, ["/opt/venv/bin/wyoming-wsrvc"], {"WYOMING_WSRVC_ARGS": "--uri tcp://[::]:10777"})
    assert server_uri(tmp_path) == "tcp://[::1]:10777"
    (tmp_path / "7" / "environ").write_bytes(b"")
    assert server_uri(tmp_path) == "tcp://127.0.0.1:10210"  # its default
    process(5, ["python3", "-m", "wyoming_wsrvc", "--uri", "unix:///run/w.sock"], {})
    assert server_uri(tmp_path) == "unix:///run/w.sock"


async def test_first_piece_comes_early_in_both_modes(server_factory: ServerFactory) -> None:
    text = "In the kitchen and the living room, the lights are now switched off. Good night."
    pieces = [
        "In the kitchen and the living room,",
        "the lights are now switched off.",
        "Good night.",
    ]
    async with server_factory() as srv:
        async with srv.client() as client:
            await client.write_event(Synthesize(text=text).event())
            await read_until(client, {"audio-stop"})
        assert srv.speech.calls == pieces
        async with srv.client() as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text=text).event())
            await client.write_event(SynthesizeStop().event())
            await read_until(client, {"synthesize-stopped"})
        assert srv.speech.calls == pieces * 2


async def test_every_request_logs_a_metrics_line(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wyoming_wsrvc.server.responses")
    async with server_factory() as srv:
        async with srv.client() as client:
            await client.write_event(Synthesize(text="One. Two three.").event())
            await read_until(client, {"audio-stop"})
        async with srv.client() as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="bruno")).event())
            await client.write_event(SynthesizeChunk(text="Hello there. ").event())
            await client.write_event(SynthesizeChunk(text="Bye.").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, {"synthesize-stopped"})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Spoke ")]
    assert len(lines) == 2, lines
    pattern = (
        r"Spoke voice (\w+): (\d+) chars, (\d+) sentence\(s\), first audio [\d.]+ s, "
        r"total [\d.]+ s, audio ([\d.]+) s, RTF [\d.]+ \(.*\)"
    )
    one_shot, stream = (re.fullmatch(pattern, line) for line in lines)
    assert one_shot is not None
    assert one_shot.groups()[:3] == ("alice", "15", "2")
    assert stream is not None
    assert stream.groups()[:3] == ("bruno", "17", "2")
    rate = AudioStart.from_event(next(e for e in events if e.type == "audio-start")).rate
    assert float(stream.group(4)) == pytest.approx(len(audio_of(events)) / 2 / rate, abs=0.006)
