"""Voice conversion of speech that arrives in pieces (audio within a sentence).

RVC's content model and synthesizer attend over their whole input, so a piece converted alone
differs from the same stretch converted as part of the sentence. Each segment is therefore
converted inside a window with context on both sides (`LEFT` before, `RIGHT` after), and
consecutive segments overlap by `FADE`, joined with a linear crossfade, so there is no click
at a join; the pitch excitation's phase continues from window to window, as it runs through
the whole sentence. How far the result is from converting the whole sentence is measured in the
tests. The context costs little: only the models' input covers it; the synthesizer makes the
audio of the segment alone (`models.rvc.crop`).

With `short_start` (the first sentence of what is generated together: the audio a listener
waits for) the first segment is short, so the first audio comes early; a later sentence, whose
audio plays only after that one's, starts with a full segment: speech that arrives fast (a
layer voice's upstream sends a sentence in a tenth of its length) is then converted in one
window, as cheaply as the sentence alone.

All positions are in 16 kHz samples and multiples of two 10 ms frames, so that windows map to
whole output frames at the voice's rate and start on HuBERT's 50 Hz grid of the whole sentence.
"""

from __future__ import annotations

import numpy as np

from ..audio import Audio, StreamResampler
from ..config.voices import RvcParams
from ..models.rvc.frames import FRAME, RATE
from .conversion import LoadedVoice, RvcConverter

FIRST = 24 * FRAME  # 0.24 s: the first segment of a sentence (first audio)
FIRST_RIGHT = 10 * FRAME  # 0.1 s of context after the first segment
SEGMENT = 200 * FRAME  # 2.0 s: every later segment (the context costs (LEFT+RIGHT)/SEGMENT)
LEFT = 30 * FRAME  # 0.3 s of context before a segment
RIGHT = 20 * FRAME  # 0.2 s of context after a segment
FADE = 4 * FRAME  # 40 ms of overlap, crossfaded


class ConversionStream:
    """Feed 24 kHz (any rate) speech as it is vocoded; get converted audio at the voice's rate."""

    def __init__(
        self,
        converter: RvcConverter,
        params: RvcParams,
        rate: int,
        voice: LoadedVoice | None = None,
        short_start: bool = True,
    ) -> None:
        """`voice`: the loaded voice to use (default: the converter's for `params`);
        `short_start`: the first segment is `FIRST` long (else `SEGMENT`)."""
        self.converter = converter
        self.short_start = short_start
        self.params = params
        self.voice = voice or converter.voice(params)
        self.rate = self.voice.file.config.rate
        self._resampler = StreamResampler(rate, RATE)
        self._speech = np.zeros(0, dtype=np.float64)  # 16 kHz, from `_start` on
        self._start = 0
        self._done = 0  # 16 kHz samples whose conversion has been emitted (up to the fade)
        self._held = np.zeros(0, dtype=np.float64)  # output overlapping the next segment
        # the pitch excitation's phase at frames of the last window: (first frame, phases)
        self._phases: tuple[int, np.ndarray] = (0, np.zeros(1))

    def _out(self, samples16: int) -> int:
        return samples16 * self.rate // RATE

    def feed(self, audio: Audio, final: bool) -> Audio:
        """More speech of the sentence (`final`: its last piece) → the audio now final."""
        x = self._resampler.feed(audio, final).samples.astype(np.float64)
        self._speech = np.concatenate([self._speech, x])
        total = self._start + len(self._speech)
        pieces: list[np.ndarray] = []
        while True:
            first = self._done == 0 and self.short_start
            size, right = (FIRST, FIRST_RIGHT) if first else (SEGMENT, RIGHT)
            last = final and total - self._done <= size + right + FADE
            if not last and total < self._done + size + right:
                break
            end = total if last else self._done + size
            pieces.append(self._segment(self._done, end, min(total, end + right), last))
            self._done = end
            if last:
                break
        keep = max(self._start, self._done - LEFT - FADE - FRAME)
        keep -= keep % FRAME
        self._speech = self._speech[keep - self._start :]
        self._start = keep
        out = np.concatenate(pieces) if pieces else np.zeros(0)
        return Audio(np.clip(out, -0.99, 0.99).astype(np.float32), self.rate)

    def _segment(self, start: int, end: int, window_end: int, last: bool) -> np.ndarray:
        """Convert [start, end) inside its context window (up to `window_end`); crossfade
        with the held overlap."""
        fade_from = max(0, start - FADE)
        window_start = max(0, fade_from - LEFT)
        if last:
            window_end = self._start + len(self._speech)
        window = self._speech[window_start - self._start : window_end - self._start]
        if len(window) < 2 * FRAME:
            return np.zeros(0)
        # The excitation's phase where this segment's output begins, from the window before
        # (whose pitch there had context on both sides), is where this window must have it.
        first_frame, phases = self._phases
        index = min(fade_from // FRAME - first_frame, len(phases) - 1)
        known = ((fade_from - window_start) // FRAME, float(phases[index]))
        # only the audio of [fade_from, end) is made: the context is the models' input alone
        stop = len(window) if last else end - window_start
        keep = ((fade_from - window_start) // FRAME, stop // FRAME)
        result = self.converter.convert_window(
            window,
            self.voice,
            self.params,
            at_start=window_start == 0,
            at_end=last,
            phase=known if window_start else None,
            keep=keep,
        )
        self._phases = (window_start // FRAME, result.phases)
        part = result.audio
        fade = min(len(self._held), len(part))
        if fade:
            ramp = (np.arange(fade) + 0.5) / fade
            part = part.copy()
            part[:fade] = self._held[:fade] * (1 - ramp) + part[:fade] * ramp
        if last:
            self._held = np.zeros(0)
            return part
        hold = self._out(FADE)
        self._held = part[len(part) - hold :]
        return part[: len(part) - hold]
