"""Layer mode: a profile that takes its speech from another Wyoming TTS server, against a small
Wyoming TTS server these tests start (a tone per sentence, as wyoming-piper would send speech:
22050 Hz, 16-bit, in chunks), alone and with an RVC voice, through the real server socket."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_wsrvc.audio import Audio, resample, to_pcm16
from wyoming_wsrvc.config.registry import Registry
from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import (
    UpstreamParams,
    VoiceConfigError,
    WhisperSpeechParams,
    load_voices,
    parse_profile,
)
from wyoming_wsrvc.devtools.loopback import serving
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import build_pipeline, needed_refs
from wyoming_wsrvc.engine.pipeline import EngineUnavailableError
from wyoming_wsrvc.engine.speech import run_alone
from wyoming_wsrvc.engine.threads import ThreadPlan
from wyoming_wsrvc.engine.upstream import RATE, UpstreamError, UpstreamSpeech
from wyoming_wsrvc.models.whisperspeech.decoding import DecodeBatches

from .conftest import read_until, server_context

TONE_RATE = 22050
VOICES = ("tone-low", "tone-high")
ATTRIBUTION = Attribution(name="tests", url="http://127.0.0.1/")


def tone(text: str, voice: str) -> np.ndarray:
    """What the tone server says for `text`: 20 ms per character, a pitch per voice."""
    n = int(TONE_RATE * 0.02 * max(1, len(text)))
    freq = 180.0 if voice == "tone-low" else 320.0
    t = np.arange(n) / TONE_RATE
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@dataclass
class ToneServer:
    """A Wyoming TTS server on its own thread and event loop (the server under test calls it
    from its worker threads, the tests from the event loop)."""

    uri: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    slowness: float = 0.0  # seconds it waits per second of speech before answering
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    server: AsyncServer | None = None

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
            self.server = None


class ToneHandler(AsyncEventHandler):
    def __init__(self, owner: ToneServer, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.owner = owner

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            voices = [
                TtsVoice(
                    name=name,
                    description=name,
                    attribution=ATTRIBUTION,
                    installed=True,
                    version="1",
                    languages=["en"],
                )
                for name in VOICES
            ]
            program = TtsProgram(
                name="tone-tts",
                description="tones",
                attribution=ATTRIBUTION,
                installed=True,
                version="1",
                voices=voices,
            )
            await self.write_event(Info(tts=[program]).event())
            return True
        if Synthesize.is_type(event.type):
            request = Synthesize.from_event(event)
            voice = request.voice.name if request.voice else None
            self.owner.requests.append((request.text, voice))
            if voice not in (None, *VOICES):
                await self.write_event(Error(text=f"no voice {voice}").event())
                return False
            samples = tone(request.text, voice or VOICES[0])
            await asyncio.sleep(self.owner.slowness * len(samples) / TONE_RATE)
            pcm = to_pcm16(Audio(samples, TONE_RATE))
            await self.write_event(AudioStart(rate=TONE_RATE, width=2, channels=1).event())
            for i in range(0, len(pcm), 2048):
                chunk = AudioChunk(rate=TONE_RATE, width=2, channels=1, audio=pcm[i : i + 2048])
                await self.write_event(chunk.event())
            await self.write_event(AudioStop().event())
            return False
        return True


@pytest.fixture
def tone_server() -> Iterator[ToneServer]:
    owner = ToneServer()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(owner.loop)

        async def start() -> None:
            owner.server = AsyncServer.from_uri("tcp://127.0.0.1:0")
            await owner.server.start(lambda r, w: ToneHandler(owner, r, w))
            port = owner.server._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            owner.uri = f"tcp://127.0.0.1:{port}"
            started.set()

        owner.loop.run_until_complete(start())
        owner.loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield owner
    owner.stop()
    owner.loop.call_soon_threadsafe(owner.loop.stop)
    thread.join(10)


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def test_profile_fields(tmp_path: Path) -> None:
    path = tmp_path / "layer.yaml"
    profile = parse_profile(
        path, {"languages": ["en"], "upstream": {"uri": "tcp://127.0.0.1:10200", "voice": "x"}}
    )
    assert profile.upstream == UpstreamParams("tcp://127.0.0.1:10200", "x")
    bad = [
        ({"upstream": {"uri": "tcp://h:1"}, "whisperspeech": {}}, "upstream", "whisperspeech or"),
        ({"upstream": {"voice": "x"}}, "upstream.uri", "is required"),
        ({"upstream": {"uri": "localhost:10200"}}, "upstream.uri", "must be tcp://"),
        ({"upstream": {"uri": "tcp://localhost"}}, "upstream.uri", "no port"),
        ({"upstream": {"uri": "tcp://h:1", "model": "x"}}, "upstream.model", "unknown field"),
    ]
    for data, field_name, reason in bad:
        with pytest.raises(VoiceConfigError) as caught:
            parse_profile(path, {"languages": ["en"], **data})
        assert f"{path}: {field_name}: " in str(caught.value), caught.value
        assert reason in str(caught.value)


def test_speech_streams_the_upstream_audio(tone_server: ToneServer) -> None:
    speech = UpstreamSpeech(UpstreamParams(tone_server.uri, "tone-high"))
    speech.check()
    text = "Hello there, this is a longer sentence."
    batches = DecodeBatches()
    work = speech.begin(batches, [text, "Bye."], "en", WhisperSpeechParams(), 24)
    pieces = [piece for turn in run_alone(batches, work) for piece in turn]
    first = [p for p in pieces if p.sentence == 0]
    assert len(first) > 2  # handed on as the chunks arrive, not at the end
    assert [p.final for p in first] == [False] * (len(first) - 1) + [True]
    audio = np.concatenate([p.audio.samples for p in first if p.audio is not None])
    quantized = np.frombuffer(to_pcm16(Audio(tone(text, "tone-high"), TONE_RATE)), "<i2")
    expected = resample(Audio(quantized.astype(np.float32) / 32768.0, TONE_RATE), RATE).samples
    assert len(audio) == len(expected)
    assert np.abs(audio - expected).max() < 1e-5
    assert tone_server.requests[-2:] == [(text, "tone-high"), ("Bye.", "tone-high")]


def test_errors_name_the_upstream(tone_server: ToneServer) -> None:
    down = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(
        UpstreamError, match=rf"^upstream {down}: cannot connect \(Connection refused\)"
    ):
        UpstreamSpeech(UpstreamParams(down)).check()
    with pytest.raises(UpstreamError) as caught:
        UpstreamSpeech(UpstreamParams(tone_server.uri, "piper-x")).check()
    assert str(caught.value) == (
        f"upstream {tone_server.uri}: has no voice 'piper-x' (its voices: tone-low, tone-high)"
    )
    assert caught.value.code == "upstream-failed"


def write_layer_profiles(data: Path, uri: str) -> Path:
    voices = data / "layer-voices"
    voices.mkdir()
    rvc = yaml.safe_load((data / "voices" / "rvc-v1.yaml").read_text())["rvc"]
    rvc["model"] = str((data / "voices" / rvc["model"]).resolve())
    common = {"languages": ["en"], "sentence_pause": 0.1, "tail_silence": 0.1}
    (voices / "layer.yaml").write_text(
        yaml.safe_dump({**common, "upstream": {"uri": uri, "voice": "tone-low"}})
    )
    (voices / "layer-rvc.yaml").write_text(
        yaml.safe_dump({**common, "upstream": {"uri": uri}, "rvc": rvc})
    )
    return voices


def test_the_thread_plan_follows_the_profiles(tmp_path: Path) -> None:
    """Layer voices only: no decoding, the audio side gets every core, less one while an
    upstream on this host answers; with a WhisperSpeech voice too, decoding keeps its thread."""
    en = {"languages": ["en"]}
    here = parse_profile(
        tmp_path / "here.yaml", {**en, "upstream": {"uri": "tcp://127.0.0.1:10200"}}
    )
    remote = parse_profile(
        tmp_path / "remote.yaml",
        {**en, "upstream": {"uri": "tcp://piper.example:10200", "same_host": False}},
    )
    speaking = parse_profile(tmp_path / "ws.yaml", en)
    assert here.upstream is not None
    assert here.upstream.same_host
    assert remote.upstream is not None
    assert not remote.upstream.same_host
    plan = ThreadPlan.for_profiles(2, [here])
    assert (plan.decodes, plan.audio, plan.total, plan.overlap) == (False, 1, 2, True)
    assert plan.describe() == (
        "2 threads: no WhisperSpeech to decode; audio 2 (1 while a slow upstream on this host "
        "answers)"
    )
    # the audio side's threads at a given moment: every one unless something keeps a core busy
    assert plan.audio_now(decoding=False) == 2
    assert plan.audio_now(decoding=True, upstream_busy=False) == 2  # a fast upstream (Piper)
    assert plan.audio_now(decoding=True, upstream_busy=True) == 1  # a slow one on this host
    plan = ThreadPlan.for_profiles(2, [remote])
    assert (plan.decodes, plan.audio, plan.total) == (False, 2, 2)
    assert plan.audio_now(decoding=True, upstream_busy=True) == 2
    assert plan.describe() == "2 threads: no WhisperSpeech to decode; audio 2"
    assert plan.peak == 2
    assert ThreadPlan.for_profiles(4, [remote, here]).audio == 3
    assert ThreadPlan.for_profiles(1, [here]).audio == 1  # one core: shared, never zero
    mixed = ThreadPlan.for_profiles(2, [here, speaking])
    assert (mixed.decodes, mixed.decode, mixed.audio) == (True, 1, 1)
    assert mixed.audio_now(decoding=True) == 1  # WhisperSpeech decoding keeps its core
    assert mixed.audio_now(decoding=False) == 2
    with pytest.raises(VoiceConfigError, match=r"upstream\.same_host: must be true or false"):
        parse_profile(
            tmp_path / "bad.yaml", {**en, "upstream": {"uri": "tcp://h:1", "same_host": "yes"}}
        )


def test_an_upstream_is_measured_fast_or_slow(tone_server: ToneServer) -> None:
    """The time spent waiting for an upstream per second of its speech decides whether it keeps
    a core of this host busy while it answers (then the audio side leaves it one)."""
    texts = ["A first sentence, long enough to teach a rate.", "And a second one, as long."]
    fast = UpstreamSpeech(UpstreamParams(uri=tone_server.uri))
    slow = UpstreamSpeech(UpstreamParams(uri=tone_server.uri))
    elsewhere = UpstreamSpeech(UpstreamParams(uri=tone_server.uri, same_host=False))
    assert fast.rtf is None
    assert not fast.occupies_core  # not measured yet: shares the cores
    _speak(fast, texts)
    tone_server.slowness = 0.8
    _speak(slow, texts)
    _speak(elsewhere, texts)
    assert fast.rtf is not None
    assert fast.rtf < 0.3
    assert not fast.occupies_core
    assert slow.rtf is not None
    assert slow.rtf >= 0.8
    assert slow.occupies_core
    assert elsewhere.rtf is not None
    assert elsewhere.rtf >= 0.8
    assert not elsewhere.occupies_core  # another machine's core


def _speak(upstream: UpstreamSpeech, texts: list[str]) -> None:
    batches = DecodeBatches()
    work = upstream.begin(batches, texts, "en", WhisperSpeechParams(), 24)
    assert sum(1 for turn in run_alone(batches, work) for p in turn if p.final) == len(texts)


async def test_layer_mode_end_to_end(
    tone_server: ToneServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Layer voices over the real socket: the upstream's speech as is, and converted by RVC;
    no WhisperSpeech model is needed or loaded; the metrics line names the upstream's time;
    an upstream that goes away is an error that names it."""
    random_models(tmp_path, "tiny")
    voices_dir = write_layer_profiles(tmp_path, tone_server.uri)
    settings = Settings.local(tmp_path, voices_dir=voices_dir)
    profiles = load_voices(voices_dir)
    assert not [ref for ref in needed_refs(Registry(tmp_path, True), profiles) if "vocos" in ref]
    pipeline, voices = build_pipeline(settings, profiles)
    assert pipeline.speech is None  # WhisperSpeech was not loaded
    assert pipeline.converter is not None
    pipeline.converter.noise = False
    # the first sentence of a request is converted from a short first segment (its audio is
    # awaited); the others, and every sentence of later groups, from a full one
    layer_rvc = voices["layer-rvc"]
    opening = pipeline.utterance(["One.", "Two."], layer_rvc)
    later = pipeline.utterance(["Three."], layer_rvc, opens=False)
    streams = [opening.conversion(0), opening.conversion(1), later.conversion(0)]
    assert [s.short_start if s is not None else None for s in streams] == [True, False, False]
    assert pipeline.utterance(["Hi."], voices["layer"]).conversion(0) is None  # no RVC voice
    text = "Turn on the light. Thank you."
    caplog.set_level("INFO", logger="wyoming_wsrvc.server.responses")
    context = server_context(pipeline, voices, "layer")
    assert not context.scheduler.plan.decodes  # the audio side gets the cores
    async with serving(context) as port:
        for name, rate in (("layer", 24000), ("layer-rvc", 48000)):  # v1 48 kHz voice
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(
                    Synthesize(text=text, voice=SynthesizeVoice(name=name)).event()
                )
                events = await read_until(client, {"audio-stop", "error"}, timeout=120)
            assert events[-1].type == "audio-stop", events[-1]
            assert AudioStart.from_event(events[0]).rate == rate
            pcm = b"".join(
                AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk"
            )
            seconds = len(pcm) / 2 / rate
            expected = 0.02 * (len("Turn on the light.") + len("Thank you.")) + 0.1 + 0.1
            assert seconds == pytest.approx(expected, abs=0.01), name
            if name == "layer":  # the upstream's speech, resampled, exactly
                first = np.frombuffer(pcm, "<i2")[: int(0.02 * 18 * rate)]
                quantized = (
                    np.frombuffer(
                        to_pcm16(Audio(tone("Turn on the light.", "tone-low"), TONE_RATE)), "<i2"
                    ).astype(np.float32)
                    / 32768.0
                )
                want = np.frombuffer(to_pcm16(resample(Audio(quantized, TONE_RATE), rate)), "<i2")[
                    : len(first)
                ]
                assert np.abs(first.astype(int) - want.astype(int)).max() <= 1
        spoke = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Spoke")]
        assert len(spoke) == 2
        for line in spoke:  # the upstream's time is named as such, not filed under S2A
            assert re.search(r"\(upstream [\d.]+ s, ", line), line
            assert "s2a" not in line
        tone_server.stop()
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(
                Synthesize(text="Anyone there?", voice=SynthesizeVoice(name="layer")).event()
            )
            events = await read_until(client, {"audio-stop", "error"}, timeout=60)
        error = Error.from_event(events[-1])
        assert error.code == "upstream-failed"
        assert error.text.startswith(f"upstream {tone_server.uri}: cannot connect")


def test_start_up_refuses_an_upstream_that_is_down(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    down = f"tcp://127.0.0.1:{closed_port()}"
    (voices / "layer.yaml").write_text(
        yaml.safe_dump({"languages": ["en"], "upstream": {"uri": down}})
    )
    with pytest.raises(EngineUnavailableError) as caught:
        build_pipeline(Settings.local(tmp_path, voices_dir=voices), load_voices(voices))
    assert str(caught.value) == (
        f"{voices / 'layer.yaml'}: upstream {down}: cannot connect (Connection refused)"
    )
