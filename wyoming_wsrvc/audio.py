"""The one audio value type that crosses every stage boundary, and the only place rates change."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

PCM_WIDTH = 2
PCM_CHANNELS = 1


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at `rate` Hz (shape `(samples,)`)."""

    samples: np.ndarray
    rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 1:
            raise ValueError(f"Audio must be mono (1-D), got shape {self.samples.shape}")
        if self.rate <= 0:
            raise ValueError(f"Audio rate must be positive, got {self.rate}")

    @classmethod
    def from_tensor(cls, samples: torch.Tensor, rate: int) -> Audio:
        """Take a `(samples,)` or `(1, samples)` tensor on any device."""
        array = samples.detach().reshape(-1).float().cpu().numpy()
        return cls(np.ascontiguousarray(array, dtype=np.float32), rate)

    @classmethod
    def silence(cls, seconds: float, rate: int) -> Audio:
        return cls(np.zeros(max(0, round(seconds * rate)), dtype=np.float32), rate)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def __len__(self) -> int:
        return len(self.samples)


@lru_cache(maxsize=16)
def _resampler_key(orig: int, new: int) -> tuple[int, int]:
    divisor = np.gcd(orig, new)
    return orig // divisor, new // divisor


def resample(audio: Audio, rate: int) -> Audio:
    """Band-limited (windowed sinc) resampling to `rate` Hz; output length is round(n * rate / orig)."""
    if audio.rate == rate:
        return audio
    if len(audio) == 0:
        return Audio(audio.samples, rate)
    import torchaudio.functional as AF

    orig, new = _resampler_key(audio.rate, rate)
    tensor = torch.from_numpy(audio.samples)
    out = AF.resample(tensor, orig, new)
    return Audio.from_tensor(out, rate)


class StreamResampler:
    """`resample` for audio arriving in pieces: the joined output equals resampling the whole
    (to float tolerance). Each piece is resampled inside a window that starts on the rates'
    common period with `margin` input samples of left context; outputs whose filter would reach
    past the input received so far wait for the next piece (or the final one)."""

    def __init__(self, orig: int, new: int, margin: int = 64) -> None:
        self.orig, self.new = orig, new
        self.period, self.out_period = _resampler_key(orig, new)
        self.margin = margin
        self._buffer = np.zeros(0, dtype=np.float32)
        self._start = 0  # global input index of _buffer[0], a multiple of `period`
        self._emitted = 0  # output samples returned so far

    def feed(self, audio: Audio, final: bool) -> Audio:
        if self.orig == self.new:
            return Audio(audio.samples, self.new)
        self._buffer = np.concatenate([self._buffer, audio.samples]).astype(np.float32)
        total = self._start + len(self._buffer)
        p, q = self.period, self.out_period
        # the whole signal's output length is torchaudio's ceil(n · new / orig)
        end = -(-total * q // p) if final else max(0, (total - self.margin) * q // p)
        if end <= self._emitted:
            return Audio(np.zeros(0, dtype=np.float32), self.new)
        window = resample(Audio(self._buffer, self.orig), self.new).samples
        offset = self._start * q // p
        out = window[self._emitted - offset : end - offset]
        self._emitted = end
        keep = max(self._start, (end * p // q - self.margin) // p * p)
        self._buffer = self._buffer[keep - self._start :]
        self._start = keep
        return Audio(np.ascontiguousarray(out, dtype=np.float32), self.new)


def concat(pieces: list[Audio]) -> Audio:
    """Join pieces of one rate."""
    if not pieces:
        raise ValueError("nothing to concatenate")
    rate = pieces[0].rate
    if any(p.rate != rate for p in pieces):
        raise ValueError("cannot concatenate audio of different rates")
    return Audio(np.concatenate([p.samples for p in pieces]).astype(np.float32), rate)


def to_pcm16(audio: Audio) -> bytes:
    """Little-endian signed 16-bit PCM, clipped to the representable range."""
    clipped = np.clip(np.nan_to_num(audio.samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    result: bytes = (np.round(clipped * 32767.0)).astype("<i2").tobytes()
    return result


def iter_chunks(pcm: bytes, samples_per_chunk: int, width: int = PCM_WIDTH) -> Iterator[bytes]:
    """Split PCM bytes into chunks of `samples_per_chunk` frames (the last may be shorter)."""
    step = samples_per_chunk * width
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]
