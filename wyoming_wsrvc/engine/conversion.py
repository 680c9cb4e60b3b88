"""Voice conversion of one sentence: speech → the timbre of an RVC voice.

Audio (any rate) → 16 kHz, peak ≤ 0.95, 48 Hz high-pass → reflect-padded by 0.24 s (upstream pads
1 s on CPU: far too much for short TTS sentences) → pitch (10 ms frames; shifted, clamped,
quantised) and content features (50 Hz) → optional index blend → ×2 to 100 Hz → `protect` →
synthesizer at the voice's rate → padding cut → `rms_mix_rate` loudness blend → limited to ±0.99.
Audio longer than 30 s is converted in pieces cut at its quietest 10 ms.

Loaded voices (synthesizer + index) are kept in a bounded LRU, keyed by their files and the
files' size and modification time (a voice file replaced while the server runs is loaded anew);
the content and pitch models are shared by every voice.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import butter, sosfiltfilt

from ..audio import Audio, resample
from ..config.voices import RvcParams, VoiceUnavailableError
from ..models.rvc.checkpoint import RvcVoiceFile, load_synthesizer, read_voice
from ..models.rvc.content import ContentEncoder, ContentModelError, ContentModels
from ..models.rvc.embedders import EmbedderError, embedder_for
from ..models.rvc.frames import FRAME, RATE
from ..models.rvc.index import FeatureIndex, IndexFileError
from ..models.rvc.pitch import PitchExtractor, coarse, shift
from ..models.rvc.synthesizer import Synthesizer

_LOGGER = logging.getLogger(__name__)

PAD_SECONDS = 0.24
MAX_SECONDS = 30.0
_HIGHPASS = butter(5, 48, btype="high", fs=RATE, output="sos")


class VoiceLoadError(VoiceUnavailableError, ValueError):
    """A voice (or its index) cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class VoiceFacts:
    """What a loaded voice file is (shown in the voice studio)."""

    version: str  # v1, v2
    vocoder: str  # HiFi-GAN, MRF HiFi-GAN, RefineGAN
    rate: int
    embedder: str  # the content model's name
    pitch: bool
    speakers: int
    index: bool


@dataclass
class LoadedVoice:
    file: RvcVoiceFile
    synthesizer: Synthesizer
    index: FeatureIndex | None
    embedder: str
    content: ContentEncoder

    @property
    def facts(self) -> VoiceFacts:
        cfg = self.file.config
        return VoiceFacts(
            self.file.version,
            cfg.decoder_name,
            cfg.rate,
            Path(self.embedder).name,
            cfg.f0,
            cfg.n_speakers,
            self.index is not None,
        )


_VoiceKey = tuple[Path, tuple[int, int] | None, Path | None, tuple[int, int] | None, str | None]


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """A file's (modification time, size): a file replaced in place is another file."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None  # loading it reports why
    return stat.st_mtime_ns, stat.st_size


def voice_key(params: RvcParams) -> _VoiceKey:
    return (
        params.model,
        _stamp(params.model),
        params.index,
        _stamp(params.index),
        params.embedder,
    )


class RvcConverter:
    """The RVC conversion stage: converts on the audio worker; voices may be loaded from another
    thread too (a voice added while the server runs), so the table of loaded voices is locked."""

    def __init__(
        self,
        content: ContentModels,
        pitch: dict[str, PitchExtractor],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        max_loaded: int = 4,
        noise: bool = True,
        decoder_dtypes: dict[str, torch.dtype] | None = None,
    ) -> None:
        """`dtype`: the synthesizers'; `decoder_dtypes`: another for voices with that decoder
        (`synthesizer.VOCODERS`), e.g. RefineGAN kept float32 beside bfloat16 ones."""
        self.content = content
        self.pitch = pitch
        self.device = device
        self.dtype = dtype
        self.decoder_dtypes = dict(decoder_dtypes or {})
        self.max_loaded = max(1, max_loaded)
        self.noise = noise
        self._voices: OrderedDict[_VoiceKey, LoadedVoice] = OrderedDict()
        self._facts: dict[_VoiceKey, VoiceFacts] = {}  # of every voice loaded once
        self._lock = threading.Lock()
        self.nonfinite_outputs = (
            0  # conversions whose output had NaN/inf (silenced); warm-up checks
        )

    def voice(self, params: RvcParams) -> LoadedVoice:
        """The loaded voice for `params` (loading it, and evicting the least recently used)."""
        key = voice_key(params)
        with self._lock:
            loaded = self._voices.get(key)
            if loaded is not None:
                self._voices.move_to_end(key)
        if loaded is None:
            loaded = self._load(params)  # outside the lock: conversions of loaded voices go on
            with self._lock:
                self._voices[key] = loaded
                self._facts[key] = loaded.facts
                while len(self._voices) > self.max_loaded:
                    evicted, _ = self._voices.popitem(last=False)
                    _LOGGER.debug("Unloaded voice %s (LRU)", evicted[0].name)
        cfg = loaded.file.config
        if cfg.f0 and params.f0_method not in self.pitch:
            raise VoiceLoadError(f"{params.model}: pitch method {params.f0_method!r} is not loaded")
        if params.speaker_id >= cfg.n_speakers:
            raise VoiceLoadError(
                f"{params.model}: speaker_id {params.speaker_id} but the voice has "
                f"{cfg.n_speakers} speaker(s)"
            )
        return loaded

    def _load(self, params: RvcParams) -> LoadedVoice:
        start = time.perf_counter()
        try:
            file = read_voice(params.model)
            embedder = embedder_for(params.embedder, file.embedder, params.model)
            content = self.content.get(embedder)
            if file.version == "v1" and not content.projects:
                raise EmbedderError(
                    f"{params.model}: a v1 voice needs 256-dim features, but content model "
                    f"{embedder} has no final_proj"
                )
            dtype = self.decoder_dtypes.get(file.config.vocoder, self.dtype)
            synthesizer = load_synthesizer(file, self.device, dtype)
            index = FeatureIndex.load(params.index) if params.index is not None else None
        except (ValueError, IndexFileError, ContentModelError) as err:
            raise VoiceLoadError(str(err)) from err
        if index is not None and index.dim != file.config.feature_dim:
            raise VoiceLoadError(
                f"{params.index}: {index.dim}-dim index for a {file.version} voice "
                f"({file.config.feature_dim}-dim features)"
            )
        _LOGGER.info(
            "Loaded RVC voice %s (%s, %s, %s, %d Hz, %s%s) in %.2f s",
            params.model.name,
            file.version,
            Path(embedder).name,
            file.config.decoder_name,
            file.config.rate,
            "pitch" if file.config.f0 else "no pitch",
            ", index" if index is not None else "",
            time.perf_counter() - start,
        )
        return LoadedVoice(file, synthesizer, index, embedder, content)

    @property
    def loaded(self) -> list[Path]:
        with self._lock:
            return [key[0] for key in self._voices]

    def known_facts(self, params: RvcParams) -> VoiceFacts | None:
        """What the voice file of `params` is, if it was ever loaded (never loads)."""
        return self._facts.get(voice_key(params))

    def output_rate(self, params: RvcParams) -> int:
        facts = self.known_facts(params)
        return facts.rate if facts is not None else self.voice(params).facts.rate

    def convert(self, audio: Audio, params: RvcParams) -> Audio:
        """One sentence of speech (any rate) → the voice, at the voice's native rate."""
        voice = self.voice(params)
        rate = voice.file.config.rate
        x = resample(audio, RATE).samples.astype(np.float64)
        if len(x) < 2 * FRAME:  # shorter than two pitch frames: nothing to convert
            return Audio.silence(len(x) / RATE, rate)
        out = self.convert_window(x, voice, params, at_start=True, at_end=True).audio
        # Limited per sample (not scaled by the sentence's peak), so that a sentence converted
        # in pieces (`chunks.ConversionStream`) is limited the same way.
        return Audio(np.clip(out, -0.99, 0.99).astype(np.float32), rate)

    def convert_window(
        self,
        x: np.ndarray,
        voice: LoadedVoice,
        params: RvcParams,
        at_start: bool,
        at_end: bool,
        phase: tuple[int, float] | None = None,
        keep: tuple[int, int] | None = None,
    ) -> Converted:
        """16 kHz speech → the voice at its rate, `len(x) / 160` frames of `hop` samples.

        A window that does not touch the sentence's start (end) gets no reflect padding there:
        the speech around it is its context (`chunks.ConversionStream`); `phase` = (frame,
        turns) continues the pitch excitation of the speech before: at that frame of the window
        the excitation has that phase. `keep` = (first, end) 10 ms frames of `x`: only their
        audio is made and returned (the decoder runs on them and its context: `crop`), and the
        loudness blend is taken over them."""
        rate = voice.file.config.rate
        peak = np.abs(x).max() if len(x) else 0
        if peak > 0.95:
            x = x * (0.95 / peak)
        if len(x) > 27:  # sosfiltfilt needs a few samples of edge padding
            x = sosfiltfilt(_HIGHPASS, x)
        source = x.astype(np.float32)
        cuts = _cut_points(source)
        pieces = [
            self._convert_piece(
                source[a:b],
                voice,
                params,
                at_start or a > 0,
                at_end or b < len(source),
                phase if a == 0 else None,
                keep if len(cuts) == 1 else None,
            )
            for a, b in cuts
        ]
        out = np.concatenate([p.audio for p in pieces]) if len(pieces) > 1 else pieces[0].audio
        if keep is not None:
            first, end = keep
            source = source[first * FRAME : end * FRAME]
            if len(cuts) > 1:  # audio over 30 s: converted whole, then cut
                hop = voice.file.config.hop
                out = out[first * hop : end * hop]
        if params.rms_mix_rate < 1:
            out = _mix_rms(source, out, rate, params.rms_mix_rate)
        if not np.isfinite(out).all():
            _LOGGER.warning("%s produced non-finite samples; they are silenced", params.model.name)
            self.nonfinite_outputs += 1
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return Converted(np.asarray(out), pieces[0].phases)

    def _convert_piece(
        self,
        x: np.ndarray,
        voice: LoadedVoice,
        params: RvcParams,
        pad_left: bool = True,
        pad_right: bool = True,
        phase: tuple[int, float] | None = None,
        keep: tuple[int, int] | None = None,
    ) -> Converted:
        """`keep`: frames of `x` whose audio is made (default: all; never the padding's)."""
        cfg = voice.file.config
        # A whole number of HuBERT frames (2 × 10 ms), so that HuBERT's 50 Hz grid is the same
        # for a sentence and for windows of it that start on an even frame (`chunks`).
        pad = min(int(PAD_SECONDS * RATE), (len(x) - 1) // (2 * FRAME) * (2 * FRAME))
        left, right = (pad if pad_left else 0), (pad if pad_right else 0)
        tensor = torch.from_numpy(x)
        if left or right:
            padded = F.pad(tensor[None, None], (left, right), mode="reflect")[0, 0]
        else:
            padded = tensor
        frames = len(padded) // FRAME
        # HuBERT yields ⌊(n - 400) / 320⌋ + 1 frames; 320 more samples make its 50 Hz frames
        # cover every 10 ms pitch frame, so the output keeps the input's duration.
        features = voice.content.features(F.pad(padded, (0, 2 * FRAME)), voice.file.version)
        original = features
        if voice.index is not None and params.index_rate > 0:
            features = voice.index.blend(features, params.index_rate)
        features = features.repeat_interleave(2, dim=1)
        original = original.repeat_interleave(2, dim=1)
        frames = min(frames, features.shape[1])
        features, original = features[:, :frames], original[:, :frames]
        f0_hz = f0_bins = None
        f0 = np.zeros(frames)
        if cfg.f0:
            f0 = self.pitch[params.f0_method].f0(padded)[:frames]
            f0 = np.pad(f0, (0, frames - len(f0)))
            f0 = shift(f0, params.pitch_shift)
            if params.protect < 0.5:
                voiced = torch.from_numpy(np.where(f0 > 0, 1.0, params.protect)).to(features)[
                    None, :, None
                ]
                features = features * voiced + original * (1 - voiced)
            f0_hz = torch.from_numpy(f0).float()[None].to(self.device)
            f0_bins = torch.from_numpy(coarse(f0))[None].to(self.device)
        start_phase = 0.0
        if phase is not None and not left:  # back from the frame whose phase is known
            frame, turns = phase
            start_phase = (turns - float(np.sum(f0[:frame])) / 100.0) % 1.0
        # the frames of the padded input whose audio is wanted: never the padding's
        first, end = keep if keep is not None else (0, frames)
        offset = left // FRAME
        span = (min(frames, offset + first), min(frames, offset + end, frames - right // FRAME))
        result = voice.synthesizer.infer(
            features.to(self.device),
            f0_bins,
            f0_hz,
            sid=params.speaker_id,
            noise=self.noise,
            phase=start_phase,
            keep=span,
        )
        out = result.audio[0, 0].float().cpu().numpy()
        # the excitation's phase (turns) at the start of each frame of `x`: f0 / 100 per frame
        phases = start_phase + np.concatenate([[0.0], np.cumsum(f0 / 100.0)])
        return Converted(out, phases[offset:] % 1.0)


@dataclass(frozen=True)
class Converted:
    """Converted audio at the voice's rate, and the pitch excitation's phase (turns) at the start
    of each 10 ms frame of the input (for continuing it in the next window)."""

    audio: np.ndarray
    phases: np.ndarray


def _cut_points(x: np.ndarray) -> list[tuple[int, int]]:
    """Split audio longer than MAX_SECONDS at the quietest 10 ms near each 20 s mark."""
    limit = int(MAX_SECONDS * RATE)
    if len(x) <= limit:
        return [(0, len(x))]
    energy = np.convolve(np.abs(x), np.ones(FRAME), mode="same")
    cuts, start, step, search = [0], 0, int(20 * RATE), int(2 * RATE)
    while len(x) - start > limit:
        center = start + step
        window = energy[center - search : center + search]
        start = center - search + int(np.argmin(window))
        start -= start % FRAME
        cuts.append(start)
    cuts.append(len(x))
    return list(itertools.pairwise(cuts))


def _frame_rms(x: np.ndarray, rate: int) -> np.ndarray:
    """RMS over centred frames of 2 × (rate // 2) samples every rate // 2 samples (zero padded)."""
    hop = rate // 2
    padded = np.pad(x, (hop, hop))
    count = len(x) // hop + 1
    return np.array(
        [np.sqrt(np.mean(padded[i * hop : i * hop + 2 * hop] ** 2)) for i in range(count)]
    )


def _mix_rms(source: np.ndarray, out: np.ndarray, rate: int, mix: float) -> np.ndarray:
    """out · rms_in^(1-mix) · rms_out^(mix-1): mix 1 keeps the voice's loudness, 0 the input's."""
    if len(out) == 0 or len(source) == 0:
        return out

    def stretch(values: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(values.astype(np.float32))[None, None]
        return F.interpolate(tensor, size=len(out), mode="linear")[0, 0].numpy()

    rms_in = stretch(_frame_rms(source, RATE))
    rms_out = np.maximum(stretch(_frame_rms(out, rate)), 1e-6)
    result: np.ndarray = out * (rms_in ** (1 - mix)) * (rms_out ** (mix - 1))
    return result
