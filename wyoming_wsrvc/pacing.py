"""Pacing: how fast each voice is made on this machine, and when an answer's first audio may
leave so that a listener playing it in real time never runs dry.

A satellite starts playing at the first audio chunk and plays at real time. When a voice is made
more slowly than real time (an RVC voice on a small CPU), sending each piece as soon as it is
ready makes the satellite fall silent mid-answer, again and again. Instead the answer's first
audio is held until what is buffered covers the rest:

    hold until   lead + buffered ≥ (rtf · RATE_MARGIN − 1) · remaining · LENGTH_MARGIN + lag

where `rtf` is the voice's measured production time per second of speech, `remaining` the
speech still to be made (expected from the text), `buffered` the audio held back so far,
`lead` what the listener still has to play from earlier sentences, and `lag` how far, beyond
what its rate explains, the voice's pieces have fallen behind a listener who started at their
first piece (audio comes in bursts: RVC converts a short first segment, then 2 s ones). A voice
whose `rtf · RATE_MARGIN ≤ 1` and whose pieces never fell behind keeps up and is never held. A one-shot answer is one unit (its whole
text is known); a streamed answer (an LLM's) is paced sentence by sentence: each sentence counts
what the listener still has of the ones before, and what it must cover includes the sentences
already waiting behind it (they are made after it). Text that has not arrived yet cannot be
covered: a pause in the LLM's text is a pause in the answer.

Speeds are measured at warm-up (`VoiceSpeed.from_warmup`) and then follow the requests
(`Speeds.observe`: a running average), so they track the machine's real load. Everything here
runs on the event loop; nothing touches a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

RATE_MARGIN = 1.1  # production is taken to be 10 % slower than measured
LENGTH_MARGIN = 1.2  # and an answer 20 % longer than its text suggests
SMOOTHING = 0.3  # the weight of the newest request in a voice's running figures
MIN_SAMPLE = 0.5  # seconds of speech after the first piece below which a request teaches nothing
DEFAULT_SECONDS_PER_CHAR = 1 / 13  # WhisperSpeech's natural pace, before any measurement
LAG_TOLERANCE = 0.02  # seconds behind that no listener hears (one audio chunk)


@dataclass
class VoiceSpeed:
    """A voice's production on this machine: `rtf` seconds of work per second of speech once
    its first audio is out, and `seconds_per_char` of speech per character of text."""

    rtf: float
    seconds_per_char: float = DEFAULT_SECONDS_PER_CHAR
    lag: float = 0.0  # seconds its pieces fell behind a listener, beyond what `rtf` explains
    requests: int = 0  # requests measured since the warm-up

    @classmethod
    def from_warmup(
        cls, decode: float, audio: float, speech: float, characters: int, overlap: bool
    ) -> VoiceSpeed:
        """From a warm-up sentence's decode-side and audio-side seconds (each on the threads the
        server gives it) and the `speech` seconds it made: the two sides run at the same time
        when the thread plan overlaps them, so the slower one sets the pace."""
        work = max(decode, audio) if overlap else decode + audio
        return cls(work / max(speech, 1e-3), speech / max(1, characters))

    @property
    def keeps_up(self) -> bool:
        return self.rtf * RATE_MARGIN <= 1.0 and self.lag <= LAG_TOLERANCE

    def hold_per_second(self) -> float:
        """How much later an answer starts, per second of answer (0 for a voice that keeps up)."""
        return max(0.0, self.rtf * RATE_MARGIN - 1.0) * LENGTH_MARGIN

    def expected(self, characters: int) -> float:
        """Seconds of speech expected for `characters` of text (with the length margin)."""
        return characters * self.seconds_per_char * LENGTH_MARGIN

    def describe(self) -> str:
        if self.keeps_up:
            return f"RTF {self.rtf:.2f}: keeps up with a real-time listener"
        per_second = self.hold_per_second()
        return (
            f"RTF {self.rtf:.2f}: slower than real time, so answers start later instead of "
            f"pausing: by about {per_second:.2f} s per second of answer "
            f"(a 10 s answer {10 * per_second:.1f} s later)"
        )


class Speeds:
    """Every voice's `VoiceSpeed` (by profile name); unknown voices are never held."""

    def __init__(self) -> None:
        self._voices: dict[str, VoiceSpeed] = {}

    def get(self, voice: str) -> VoiceSpeed | None:
        return self._voices.get(voice)

    def set(self, voice: str, speed: VoiceSpeed) -> None:
        self._voices[voice] = speed

    def observe(self, voice: str, sample: Production) -> None:
        """Fold one finished unit's production into the voice's running figures."""
        speed = self._voices.get(voice)
        if speed is None or sample.after_first < MIN_SAMPLE:
            return
        rtf = sample.wall / sample.after_first
        speed.rtf += SMOOTHING * (rtf - speed.rtf)
        # a burst seen once is likely again: the lag rises at once and falls slowly
        speed.lag = max(sample.lag, speed.lag + SMOOTHING * (sample.lag - speed.lag))
        if sample.characters:
            per_char = sample.speech / sample.characters
            speed.seconds_per_char += SMOOTHING * (per_char - speed.seconds_per_char)
        speed.requests += 1


@dataclass(frozen=True)
class Production:
    """What one unit took to make: `wall` seconds from its first piece ready to its last,
    `speech` seconds in all, `after_first` of them after the first piece."""

    wall: float
    speech: float
    after_first: float
    characters: int
    lag: float = 0.0  # the most a piece fell behind, beyond the unit's own rate (see `Gate`)


class Player:
    """The writer's model of the listener: it plays what it is sent at real time from the
    moment it arrives, and waits (an underrun) when it has nothing."""

    def __init__(self) -> None:
        self._ends = 0.0  # when the listener finishes what it has been sent

    def sent(self, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._ends = max(self._ends, now) + seconds

    def lead(self, now: float | None = None) -> float:
        """Seconds of audio the listener has yet to play."""
        now = time.monotonic() if now is None else now
        return max(0.0, self._ends - now)


@dataclass
class _Piece:
    seconds: float
    speech: bool
    ready: float


@dataclass
class Gate:
    """One unit's audio (a one-shot answer, or a streamed sentence): `add` each piece as it is
    ready; it says when the held pieces may go (`open`). `held`: seconds from the first piece
    ready to the release."""

    speed: VoiceSpeed | None
    characters: int
    player: Player
    upcoming: Callable[[], int] | None = None  # characters queued after this unit, made later
    open: bool = False
    held: float = 0.0
    _pieces: list[_Piece] = field(default_factory=list)
    _buffered: float = 0.0

    def __post_init__(self) -> None:
        self.open = self.speed is None or self.speed.keeps_up

    def add(self, seconds: float, speech: bool = True, ready: float | None = None) -> bool:
        """A piece of `seconds` of audio (speech, or a pause) is ready; True when the unit's
        audio may be sent now (and from now on)."""
        ready = time.monotonic() if ready is None else ready
        self._pieces.append(_Piece(seconds, speech, ready))
        if self.open:
            return True
        self._buffered += seconds
        if self._covered(ready):
            self.release(ready)
        return self.open

    def release(self, now: float | None = None) -> None:
        """The unit is complete (or covered): what is held may go."""
        if self.open:
            return
        now = time.monotonic() if now is None else now
        self.open = True
        first = next((p.ready for p in self._pieces), now)
        self.held = max(0.0, now - first)

    def _covered(self, now: float) -> bool:
        if self.speed is None:
            return True
        made = sum(p.seconds for p in self._pieces if p.speech)
        remaining = max(0.0, self.speed.expected(self.characters) - made)
        if self.upcoming is not None:
            remaining += self.speed.expected(self.upcoming())
        need = max(0.0, self.speed.rtf * RATE_MARGIN - 1.0) * remaining + self.speed.lag
        return self.player.lead(now) + self._buffered >= need

    def production(self) -> Production:
        speech = [p for p in self._pieces if p.speech and p.seconds > 0]
        if not speech:
            return Production(0.0, 0.0, 0.0, self.characters)
        total = sum(p.seconds for p in speech)
        wall = speech[-1].ready - speech[0].ready
        after = total - speech[0].seconds
        # how far each piece came after a listener, started at the first piece and slowed to
        # the unit's own rate when that is below real time, needed it
        rate = max(1.0, wall / after) if after > 0 else 1.0
        lag, before = 0.0, 0.0
        for piece in speech:
            lag = max(lag, piece.ready - speech[0].ready - rate * before)
            before += piece.seconds
        return Production(wall, total, after, self.characters, lag)
