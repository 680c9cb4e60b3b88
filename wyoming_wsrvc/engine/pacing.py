"""Pacing: how fast each voice is made on this machine, and when an answer's first audio may
leave so that a listener playing it in real time never runs dry.

A satellite starts playing at the first audio chunk and plays at real time. When a voice is made
more slowly than real time (an RVC voice on a small CPU), or in bursts (RVC converts a short
first segment, then 2 s segments; each streamed sentence starts with its text tokens), sending each
piece as soon as it is ready makes the satellite fall silent mid-answer. Instead each voice's
production is modelled from what it did before: the audio at position q seconds of an answer is
ready at

    ready(q) = first + lag + rtf · q       (and never earlier than the newest piece + rtf per
                                            second still to come)

where `first` is when the answer's first piece was ready, `rtf` the voice's production time per
second of speech and `lag` how far its pieces have fallen behind that line before. The held audio
is released once a listener starting it at `max(now, when it finishes what it already has)` would
never overtake `ready(q)` up to the answer's expected end (from its text) — with margins: rtf
`RATE_MARGIN` higher, the answer `LENGTH_MARGIN` longer. A voice that keeps up (rtf below real time
with the margin, no lag) is never held.

A one-shot answer is one unit (its whole text is known). A streamed answer (an LLM's) is paced
sentence by sentence: a sentence counts what the listener still has of the ones before and covers
the sentences already queued behind it; one that ends before it is covered joins the next one's
hold. Text that has not arrived yet cannot be covered: a pause in the LLM's text is a pause in
the answer, and such sentences teach the model nothing about the voice.

Speeds are measured at warm-up (`VoiceSpeed.from_warmup`; the lag from the warm-up sentence's
pieces, timed one by one) and then follow every answer (`Speeds.observe`: running figures; a lag
rises at once and falls slowly), so they track the machine's load. Everything here runs on the
event loop; nothing touches a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

RATE_MARGIN = 1.05  # production is taken to be this much slower than measured
LENGTH_MARGIN = 1.15  # and an answer this much longer than its text suggests
SMOOTHING = 0.3  # the weight of the newest answer in a voice's running figures
MIN_SAMPLE = 0.5  # seconds of speech after the first piece below which an answer teaches no rate
LAG_TOLERANCE = 0.02  # seconds behind that no listener hears (one audio chunk)
LAG_MARGIN, LAG_SLACK = 1.2, 0.05  # a lag is taken this much longer (bursts vary)
DEFAULT_SECONDS_PER_CHAR = 1 / 13  # WhisperSpeech's natural pace, before any measurement


@dataclass
class VoiceSpeed:
    """A voice's production on this machine: `rtf` seconds of work per second of speech once
    its first audio is out, `lag` seconds its pieces fell behind that pace (bursts), and
    `seconds_per_char` of speech per character of text."""

    rtf: float
    seconds_per_char: float = DEFAULT_SECONDS_PER_CHAR
    lag: float = 0.0
    answers: int = 0  # answers measured since the warm-up

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
        """How much later an answer starts, per second of answer, for the rate alone."""
        return max(0.0, self.rtf * RATE_MARGIN - 1.0) * LENGTH_MARGIN

    def expected(self, characters: int) -> float:
        """Seconds of speech expected for `characters` of text (with the length margin)."""
        return characters * self.seconds_per_char * LENGTH_MARGIN

    def describe(self) -> str:
        if self.rtf * RATE_MARGIN <= 1.0:
            if self.lag > LAG_TOLERANCE:
                return (
                    f"RTF {self.rtf:.2f}: keeps up, but its audio comes in bursts up to "
                    f"{self.lag:.2f} s late, so answers start that much later instead of pausing"
                )
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

    def observe(self, voice: str, answer: Timeline) -> None:
        """Fold one finished answer into the voice's running figures."""
        speed = self._voices.get(voice)
        if speed is None or answer.first is None:
            return
        rate = answer.rate()
        if rate is not None:
            speed.rtf += SMOOTHING * (rate - speed.rtf)
        if answer.characters and answer.speech:
            per_char = answer.speech / answer.characters
            speed.seconds_per_char += SMOOTHING * (per_char - speed.seconds_per_char)
        lag = answer.lag(speed.rtf)
        speed.lag = max(lag, speed.lag + SMOOTHING * (lag - speed.lag))
        speed.answers += 1


class Player:
    """The writer's model of the listener: it plays what it is sent at real time from the
    moment it arrives, and waits (an underrun) when it has nothing."""

    def __init__(self) -> None:
        self.ends = 0.0  # when the listener finishes what it has been sent

    def sent(self, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.ends = max(self.ends, now) + seconds


@dataclass
class Timeline:
    """One answer's audio in the order the listener hears it: when each piece was ready and
    where it sits (seconds from the answer's start, pauses included); pieces of sentences whose
    text came after the answer's first audio was ready (an LLM's) are left out."""

    first: float | None = None
    characters: int = 0  # of the counted sentences
    speech: float = 0.0  # seconds of speech in them
    _position: float = 0.0
    _pieces: list[tuple[float, float, float]] = field(default_factory=list)  # ready, at, seconds

    def add(self, seconds: float, ready: float | None, counted: bool = True) -> None:
        """The next `seconds` of the answer; `ready` None for audio made at once (pauses)."""
        if ready is not None and counted:
            if self.first is None:
                self.first = ready
            self._pieces.append((ready, self._position, seconds))
            self.speech += seconds
        self._position += seconds

    @property
    def position(self) -> float:
        """Seconds of the answer so far (where the next audio goes)."""
        return self._position

    def rate(self) -> float | None:
        """Seconds of production per second of speech after the first piece (None: too little)."""
        if len(self._pieces) < 2:
            return None
        after = self.speech - self._pieces[0][2]
        if after < MIN_SAMPLE:
            return None
        return (self._pieces[-1][0] - self._pieces[0][0]) / after

    def lag(self, rtf: float) -> float:
        """How far its pieces came after `first + rtf · position` (0 when never)."""
        if self.first is None:
            return 0.0
        return max(0.0, *(ready - self.first - rtf * at for ready, at, _ in self._pieces))


@dataclass
class Gate:
    """One unit's audio (a one-shot answer, or streamed sentences): `add` each piece as it is
    ready; `open` says the held pieces may go, `release_at` when they may at the latest without
    new pieces. `characters`: the unit's text; `upcoming`: text queued behind it, made after it.
    `held`: seconds from the unit's first piece ready to its release."""

    speed: VoiceSpeed | None
    characters: int
    player: Player
    upcoming: Callable[[], int] | None = None
    # a later unit of the same answer: (when the answer's first piece was ready, where this
    # unit starts in the answer), so it is judged on the answer's own line, not from scratch
    origin: tuple[float, float] | None = None
    open: bool = False
    held: float = 0.0
    _anchor: float | None = None  # when the unit's first piece was ready
    _last: float = 0.0  # when its newest piece was ready
    _made: float = 0.0  # seconds of audio of the unit made so far

    def __post_init__(self) -> None:
        self.open = self.speed is None or self.speed.keeps_up

    def add(self, seconds: float, speech: bool = True, ready: float | None = None) -> bool:
        """A piece of `seconds` of audio (speech, or a pause made at once) is ready; True when the
        unit's audio may be sent now (and from now on)."""
        now = time.monotonic() if ready is None else ready
        if speech and self._anchor is None:
            self._anchor = now
        if speech:
            self._last = now
        self._made += seconds
        at = self.release_at()
        if at is not None and now >= at:
            self.release(now)
        return self.open

    def release_at(self) -> float | None:
        """The earliest time the held audio may go, given what is made so far (None: open, or
        nothing made yet: wait for a piece)."""
        speed = self.speed
        if self.open or speed is None or self._anchor is None:
            return None
        rtf = speed.rtf * RATE_MARGIN
        lag = speed.lag * LAG_MARGIN + LAG_SLACK if speed.lag > LAG_TOLERANCE else 0.0
        first, start = self.origin if self.origin is not None else (self._anchor, 0.0)
        total = speed.expected(self.characters + (self.upcoming() if self.upcoming else 0))
        total = max(total, self._made)
        made = start + self._made  # answer positions: made so far, and the expected end
        end = start + total
        # the listener plays answer position q at begin + q - start; the unmade audio is ready
        # at ready(q) = max(first + lag + rtf·q, last + rtf·(q - made)) for q in [made, end]
        if rtf >= 1.0:  # the end binds
            need = max(
                first + lag + rtf * end - (end - start),
                self._last + rtf * (end - made) - (end - start),
            )
        else:  # the next piece binds
            need = max(first + lag + rtf * made - (made - start), self._last - self._made)
        # released now, the listener begins the unit when it has played what it has
        return need if self.player.ends < need else self._last

    def release(self, now: float | None = None) -> None:
        """The unit is complete, or covered: what is held may go."""
        if self.open:
            return
        now = time.monotonic() if now is None else now
        self.open = True
        self.held = max(0.0, now - (self._anchor if self._anchor is not None else now))
