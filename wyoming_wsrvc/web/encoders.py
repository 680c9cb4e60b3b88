"""Audio as an HTTP body: `wav` (a header with open lengths, then PCM as it comes), `pcm` (raw
s16le mono at 24 kHz, the rate OpenAI's API documents for it), `mp3` and `opus` (Ogg) through
libsndfile (soundfile, already a dependency), frame by frame as they come, and `flac`, sent once
complete.

libsndfile fills an MP3 file's first frame (its Info tag) in when it closes the file; in a stream
that frame is long sent, so it is left out (`Mp3Encoder`): the stream is plain audio frames, as
a radio stream is (players decode them to the end; a reader that guesses the length from the
first frame's bit rate, as libsndfile's does, guesses short). A FLAC stream's header would
say "length unknown", which some decoders (libsndfile's own) cannot read: it is sent whole.
"""

from __future__ import annotations

import io
import struct
from typing import Protocol

import numpy as np
import soundfile

from ..audio import Audio, StreamResampler, to_pcm16

OPENAI_PCM_RATE = 24_000
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPEN_LENGTH = 0xFFFFFFFF


class Encoder(Protocol):
    content_type: str
    output_rate: int  # known after `start`

    def start(self, rate: int) -> bytes:
        """The stream's first bytes, for audio at `rate` (s16le mono)."""

    def feed(self, pcm: bytes) -> bytes:
        """More PCM at that rate → bytes to send now."""

    def finish(self) -> bytes:
        """The last bytes."""


def _floats(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


class WavEncoder:
    content_type = "audio/wav"
    output_rate = 0

    def start(self, rate: int) -> bytes:
        self.output_rate = rate
        fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
        return (
            b"RIFF"
            + struct.pack("<I", OPEN_LENGTH)
            + b"WAVEfmt "
            + struct.pack("<I", len(fmt))
            + fmt
            + b"data"
            + struct.pack("<I", OPEN_LENGTH)
        )

    def feed(self, pcm: bytes) -> bytes:
        return pcm

    def finish(self) -> bytes:
        return b""


class PcmEncoder:
    """Raw s16le mono at `rate` (resampled to it as it streams; None: the voice's own)."""

    content_type = "audio/pcm"

    def __init__(self, rate: int | None = OPENAI_PCM_RATE) -> None:
        self.rate = rate
        self._resampler: StreamResampler | None = None
        self._source = 0
        self.output_rate = rate or 0

    def start(self, rate: int) -> bytes:
        self._source = rate
        self.output_rate = self.rate or rate
        if self.output_rate != rate:
            self._resampler = StreamResampler(rate, self.output_rate)
        return b""

    def _resample(self, pcm: bytes, final: bool) -> bytes:
        if self._resampler is None:
            return pcm
        return to_pcm16(self._resampler.feed(Audio(_floats(pcm), self._source), final))

    def feed(self, pcm: bytes) -> bytes:
        return self._resample(pcm, False)

    def finish(self) -> bytes:
        return self._resample(b"", True) if self._resampler is not None else b""


class _Sink(io.RawIOBase):
    """A file for libsndfile that hands on what it appends; rewrites of bytes already handed
    on are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._sent = 0  # bytes handed on
        self._pending = bytearray()  # bytes from `_sent` on
        self._position = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        data = bytes(data)
        offset = self._position - self._sent
        if offset >= 0:
            end = offset + len(data)
            if end > len(self._pending):
                self._pending.extend(b"\0" * (end - len(self._pending)))
            self._pending[offset:end] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        size = self._sent + len(self._pending)
        base = {0: 0, 1: self._position, 2: size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = bytes(self._pending)
        self._sent += len(data)
        self._pending.clear()
        return data


class SoundFileEncoder:
    """FLAC, MP3 or Ogg Opus through libsndfile, at the voice's rate where the format allows
    it, else at 48 kHz."""

    def __init__(
        self,
        container: str,
        subtype: str,
        content_type: str,
        rates: tuple[int, ...] | None,
        streamed: bool = True,
    ) -> None:
        self.container = container
        self.subtype = subtype
        self.content_type = content_type
        self.rates = rates
        self.streamed = streamed
        self._sink = _Sink()
        self._file: soundfile.SoundFile | None = None
        self._resampler: StreamResampler | None = None
        self._source = 0
        self.output_rate = 0

    def start(self, rate: int) -> bytes:
        self._source = rate
        target = rate if self.rates is None or rate in self.rates else 48_000
        self.output_rate = target
        self._resampler = StreamResampler(rate, target) if target != rate else None
        self._file = soundfile.SoundFile(
            self._sink,
            "w",
            samplerate=target,
            channels=1,
            format=self.container,
            subtype=self.subtype,
        )
        return self._sink.take() if self.streamed else b""

    def _write(self, pcm: bytes, final: bool) -> None:
        samples = _floats(pcm)
        if self._resampler is not None:
            samples = self._resampler.feed(Audio(samples, self._source), final).samples
        if self._file is not None and len(samples):
            self._file.write(samples)

    def feed(self, pcm: bytes) -> bytes:
        self._write(pcm, False)
        return self._sink.take() if self.streamed else b""

    def finish(self) -> bytes:
        self._write(b"", True)
        if self._file is not None:
            self._file.close()
        return self._sink.take()


_MP3_BITRATES = {  # kbit/s by index, Layer III: MPEG-1, and MPEG-2/2.5
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame_length(header: bytes) -> int | None:
    """The length in bytes of the MPEG Layer III frame that starts with `header` (4 bytes);
    None for bytes that are no such header."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    bitrate = _MP3_BITRATES[version == 3][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    return (144 if version == 3 else 72) * bitrate // rate + padding


class Mp3Encoder(SoundFileEncoder):
    """MP3 without the Info-tag frame libsndfile fills in only at the end (left blank, it would
    be a frame of nothing with a wrong bit rate at the stream's start)."""

    def __init__(self) -> None:
        super().__init__("MP3", "MPEG_LAYER_III", "audio/mpeg", MP3_RATES)
        self._head = b""  # until the first frame is complete
        self._checked = False

    def _strip(self, data: bytes) -> bytes:
        if self._checked:
            return data
        self._head += data
        length = mp3_frame_length(self._head[:4])
        if length is None:
            self._checked = len(self._head) >= 4
            return self._head if self._checked else b""
        if len(self._head) < length:
            return b""
        self._checked = True
        frame, rest = self._head[:length], self._head[length:]
        return rest if not any(frame[4:]) else frame + rest

    def feed(self, pcm: bytes) -> bytes:
        return self._strip(super().feed(pcm))

    def finish(self) -> bytes:
        return self._strip(super().finish())


FORMATS = ("wav", "pcm", "flac", "mp3", "opus")


def encoder(name: str) -> Encoder:
    """A fresh encoder for `response_format` `name` (one of `FORMATS`)."""
    if name == "wav":
        return WavEncoder()
    if name == "pcm":
        return PcmEncoder()
    if name == "flac":
        return SoundFileEncoder("FLAC", "PCM_16", "audio/flac", None, streamed=False)
    if name == "mp3":
        return Mp3Encoder()
    if name == "opus":
        return SoundFileEncoder("OGG", "OPUS", "audio/ogg", OPUS_RATES)
    raise ValueError(f"unknown format {name!r}")
