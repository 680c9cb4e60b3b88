"""Pacing (`pacing`): a voice made more slowly than real time has its first audio held just long
enough that a listener playing in real time never runs dry; a voice that keeps up is never held.
Real sockets, a stage slowed on purpose, and a client that plays what it receives at real time
and adds up the time it had nothing to play."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.voices import RvcParams, VoiceProfile, WhisperSpeechParams
from wyoming_wsrvc.devtools.loopback import Heard, serving, speak
from wyoming_wsrvc.devtools.write_rvc import write_hubert, write_rvc_voice
from wyoming_wsrvc.engine.build import measure_speed
from wyoming_wsrvc.engine.conversion import RvcConverter
from wyoming_wsrvc.engine.pacing import (
    LAG_MARGIN,
    LAG_SLACK,
    LAG_TOLERANCE,
    RATE_MARGIN,
    Gate,
    Player,
    Speeds,
    Timeline,
    VoiceSpeed,
)
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.speech import SpeechPiece
from wyoming_wsrvc.engine.threads import ThreadPlan
from wyoming_wsrvc.models.rvc.content import ContentEncoder, ContentModels, load_hubert
from wyoming_wsrvc.models.rvc.pitch import YinPitch
from wyoming_wsrvc.models.vocos import VocoderStream

from .conftest import IteratorStage, server_context

PER_CHAR = 0.03  # seconds of speech per character of text
PIECE = 0.2  # seconds of speech per piece
TEXT = "The kitchen lights are on now. It is sunny, twenty degrees. Have a nice day."


@dataclass
class PacedSpeech(IteratorStage):
    """A speech stage that makes `PER_CHAR` seconds of tone per character, in pieces of
    `PIECE` s, taking `rtf` seconds of (sleeping) work per second it makes."""

    rtf: float
    rate: int = 16000
    max_text_bytes: int = 400
    calls: list[str] = field(default_factory=list)

    def stream(
        self, texts: Sequence[str], language: str, params: WhisperSpeechParams, chunk: int
    ) -> Iterator[SpeechPiece]:
        for index, text in enumerate(texts):
            total = round(len(text) * PER_CHAR * self.rate)
            step = round(PIECE * self.rate)
            for start in range(0, total, step):
                n = min(step, total - start)
                time.sleep(self.rtf * n / self.rate)
                t = np.arange(start, start + n, dtype=np.float32) / self.rate
                audio = Audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), self.rate)
                yield SpeechPiece(index, audio=audio, final=start + n >= total)

    def open_vocoder(self) -> VocoderStream:
        raise AssertionError("PacedSpeech yields audio")


async def listen(port: int, voice: str, streaming: bool) -> Heard:
    """TEXT as Home Assistant sends it (streamed word by word, or at once), the answer played
    at real time from its first chunk."""
    heard = await speak(port, TEXT, voice, streaming)
    assert heard.error is None
    assert heard.audio
    return heard


def _pipeline(rtf: float, voices: dict[str, VoiceProfile], measure: bool = True) -> Pipeline:
    pipeline = Pipeline(PacedSpeech(rtf))
    if measure:  # the warm-up's measurement, as the server's start-up makes it
        speed = measure_speed(pipeline, voices["alice"], ThreadPlan.for_threads())[1]
        pipeline.speeds.set("alice", speed)
    return pipeline


# The event loop and the sockets add a few milliseconds between chunks.
JITTER = 0.05


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["one-shot", "streaming"])
async def test_a_slow_voice_is_held_and_never_runs_dry(
    voices: dict[str, VoiceProfile], streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Made at half real time: without pacing the listener runs dry for seconds; paced, the
    first audio comes later and the answer plays through; the hold is in the metrics line,
    and the second request (speed now also learned from the first) plays through as well."""
    unpaced = server_context(_pipeline(2.0, voices, measure=False), voices, "alice")
    async with serving(unpaced) as port:
        raw = await listen(port, "alice", streaming)
    assert raw.underrun > 1.0  # the problem this solves

    pipeline = _pipeline(2.0, voices)
    speed = pipeline.speeds.get("alice")
    assert speed is not None
    assert not speed.keeps_up
    assert speed.rtf == pytest.approx(2.0, rel=0.25)
    context = server_context(pipeline, voices, "alice")
    caplog.set_level("INFO", logger="wyoming_wsrvc.server.responses")
    async with serving(context) as port:
        for _ in range(2):
            heard = await listen(port, "alice", streaming)
            assert heard.underrun <= JITTER, heard
            assert heard.first_audio > raw.first_audio + 0.5  # held, later
            assert heard.audio == raw.audio  # held, not changed
    learned = pipeline.speeds.get("alice")
    assert learned is not None
    assert learned.answers >= 2
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Spoke")]
    assert len(lines) == 2
    for line in lines:  # the hold is in the metrics line
        assert float(line.split("(held ")[1].split(" s)")[0]) > 0.5


async def test_a_voice_that_keeps_up_is_never_held(
    voices: dict[str, VoiceProfile], caplog: pytest.LogCaptureFixture
) -> None:
    """Made at five times real time: the first audio leaves as soon as it is made."""
    pipeline = _pipeline(0.2, voices)
    speed = pipeline.speeds.get("alice")
    assert speed is not None
    assert speed.keeps_up
    context = server_context(pipeline, voices, "alice")
    caplog.set_level("INFO", logger="wyoming_wsrvc.server.responses")
    async with serving(context) as port:
        for streaming in (False, True):
            heard = await listen(port, "alice", streaming)
            assert heard.underrun <= JITTER
            # its first piece (0.04 s of work) left at once: long before the rest was made
            assert heard.first_audio < heard.total / 4, heard
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Spoke")]
    assert len(lines) == 2
    assert all("held" not in line for line in lines)


def test_gate_holds_until_the_rest_will_come_in_time() -> None:
    """rtf 2 (2.1 with the margin), 100 characters at 0.1 s (11.5 s with the length margin):
    the listener may start once `anchor + 1.1 x 11.5` has passed, and not before."""
    speed = VoiceSpeed(rtf=2.0, seconds_per_char=0.1)
    gate = Gate(speed, characters=100, player=Player())
    assert gate.release_at() is None  # nothing made yet
    t = 100.0
    assert not gate.add(0.5, ready=t)
    at = gate.release_at()
    assert at is not None
    assert at == pytest.approx(100.0 + 1.1 * 11.5)
    while t + 1.0 < at:
        t += 1.0
        assert not gate.add(0.5, ready=t)
    assert gate.add(0.5, ready=at + 0.01)
    assert gate.held == pytest.approx(at + 0.01 - 100.0)


def test_gate_counts_what_the_listener_still_has() -> None:
    """A streamed sentence after others: the listener's 7 s still to play cover it, no hold."""
    player = Player()
    player.sent(8.0, now=50.0)
    speed = VoiceSpeed(rtf=1.5, seconds_per_char=0.1)
    gate = Gate(speed, characters=30, player=player)
    assert gate.add(0.3, ready=51.0)
    assert gate.held == 0


def test_gate_covers_the_sentences_queued_behind_it() -> None:
    speed = VoiceSpeed(rtf=1.5, seconds_per_char=0.1)
    alone = Gate(speed, characters=30, player=Player())
    queued = Gate(speed, characters=30, player=Player(), upcoming=lambda: 60)
    alone.add(0.3, ready=10.0)
    queued.add(0.3, ready=10.0)
    at_alone, at_queued = alone.release_at(), queued.release_at()
    assert at_alone is not None
    assert at_queued is not None
    assert at_queued - 10.0 == pytest.approx(3 * (at_alone - 10.0))


def test_voices_that_keep_up_or_are_unknown_are_never_held() -> None:
    assert Gate(VoiceSpeed(rtf=0.9), 500, Player()).add(0.1)
    assert Gate(None, 500, Player()).add(0.1)
    assert not Gate(VoiceSpeed(rtf=0.97), 500, Player()).add(0.1)  # within the margin: held


def _timeline(*pieces: tuple[float, float | None]) -> Timeline:
    answer = Timeline(characters=60)
    for seconds, ready in pieces:
        answer.add(seconds, ready)
    return answer


def test_speeds_follow_the_answers() -> None:
    """Production 2 s per second after the first piece, 0.1 s of speech per character."""
    answer = _timeline((1.0, 10.0), (2.5, 15.0), (0.5, None), (2.5, 20.0))  # a pause inside
    assert answer.rate() == pytest.approx(2.0)
    assert answer.speech == pytest.approx(6.0)
    speeds = Speeds()
    speeds.observe("x", answer)  # unknown voice: ignored
    assert speeds.get("x") is None
    speeds.set("x", VoiceSpeed(rtf=1.0, seconds_per_char=0.05))
    for _ in range(20):
        speeds.observe("x", answer)
    speed = speeds.get("x")
    assert speed is not None
    assert speed.rtf == pytest.approx(2.0, rel=0.01)
    assert speed.seconds_per_char == pytest.approx(0.1, rel=0.01)
    assert speed.answers == 20
    assert _timeline((0.3, 1.0), (0.1, 1.2)).rate() is None  # too short to teach a rate


def test_a_burst_after_the_first_piece_is_learned_and_held_for() -> None:
    """Faster than real time overall, but the second piece (a 2 s RVC segment) comes 1.5 s
    after a 0.24 s first one: a listener would run dry. That lag is learned, and the next
    answer holds its first piece until the lag has passed."""
    speeds = Speeds()
    speeds.set("v", VoiceSpeed(rtf=0.5, seconds_per_char=0.05))
    gate = Gate(speeds.get("v"), 60, Player())
    assert gate.add(0.24, ready=10.0)  # keeps up: not held
    answer = _timeline((0.24, 10.0), (2.0, 11.5), (0.76, 11.9))
    assert answer.lag(0.5) == pytest.approx(1.5 - 0.5 * 0.24)
    speeds.observe("v", answer)
    speed = speeds.get("v")
    assert speed is not None
    assert not speed.keeps_up
    assert speed.lag == pytest.approx(answer.lag(speed.rtf))
    later = Gate(speed, 60, Player())
    assert not later.add(0.24, ready=20.0)
    at = later.release_at()
    assert at is not None
    lag = speed.lag * LAG_MARGIN + LAG_SLACK  # bursts vary: the lag is taken longer
    assert at == pytest.approx(20.0 + lag - (1 - speed.rtf * RATE_MARGIN) * 0.24)
    assert later.add(2.0, ready=at + 0.1)


def test_the_warm_up_learns_the_lag_of_a_voices_bursts(
    voices: dict[str, VoiceProfile], tmp_path: Path
) -> None:
    """A real-size RVC voice's warm-up sentence: its short start, then the rest as one window.
    The speed measured carries that burst's lag, so the first answer after start-up is held for
    it (it was measured as if the audio came evenly, and that answer ran dry); the same speech
    unconverted comes evenly."""
    hubert = write_hubert(tmp_path / "hubert_base")
    model = write_rvc_voice(tmp_path / "v.pth", "v2", 40000, size="real")
    pipeline = Pipeline(PacedSpeech(0.05))
    content = ContentModels(loaded={"contentvec": ContentEncoder(load_hubert(hubert))})
    pipeline.converter = RvcConverter(content, {"yin": YinPitch()}, torch.device("cpu"))
    converted = replace(voices["alice"], rvc=RvcParams(model=model, f0_method="yin"))
    plan = ThreadPlan.for_threads()
    assert measure_speed(pipeline, voices["alice"], plan)[1].lag <= LAG_TOLERANCE
    speed = measure_speed(pipeline, converted, plan)[1]
    assert speed.lag > 0.1
    assert not speed.keeps_up
    assert speed.describe().startswith(f"RTF {speed.rtf:.2f}: ")  # the start-up line's form
    assert "late" in speed.describe()  # "…up to 1.19 s late" or "…answers start later"


def test_a_later_sentence_is_judged_on_the_answers_own_line() -> None:
    """A streamed answer's second sentence, its first piece 1 s late for a listener who still
    has 0.5 s: re-anchored it would be held for the voice's whole lag again (the listener long
    dry); on the answer's line it goes as soon as it comes."""
    speed = VoiceSpeed(rtf=0.8, seconds_per_char=0.05, lag=1.0)
    player = Player()
    player.sent(3.0, now=12.0)  # the first sentence, released at 12 s, plays until 15 s
    fresh = Gate(speed, 40, player)
    on_line = Gate(speed, 40, player, origin=(10.0, 3.0))  # the answer began at 10 s
    assert not fresh.add(0.3, ready=14.5)
    assert on_line.add(0.3, ready=14.5)


def test_the_warm_up_line_says_how_much_later_answers_start() -> None:
    slow = VoiceSpeed.from_warmup(decode=1.0, audio=5.0, speech=2.5, characters=40, overlap=True)
    assert slow.rtf == pytest.approx(2.0)
    assert "RTF 2.00" in slow.describe()
    assert "later" in slow.describe()
    assert VoiceSpeed.from_warmup(1.0, 1.0, 2.5, 40, overlap=False).rtf == pytest.approx(0.8)
    assert "keeps up" in VoiceSpeed(rtf=0.5).describe()
