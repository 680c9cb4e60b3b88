"""Pitch for RVC: extractors (RMVPE, YIN) and the shared post-processing.

Every extractor gives Hz per 10 ms frame (hop 160 at 16 kHz), 0 where unvoiced; unvoiced frames
stay at 0 (the classic behaviour most community voices were trained with). Post-processing:
transpose by semitones, keep voiced f0 within [50, 1100] Hz, and quantise to RVC's coarse
1–255 mel bins.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .frames import FRAME, RATE
from .rmvpe import Rmvpe

F0_MIN = 50.0
F0_MAX = 1100.0
_MEL_MIN = 1127 * math.log(1 + F0_MIN / 700)
_MEL_MAX = 1127 * math.log(1 + F0_MAX / 700)


class PitchExtractor(Protocol):
    def f0(self, audio: Tensor) -> np.ndarray:
        """(samples,) float at 16 kHz → Hz per 10 ms frame, samples // 160 + 1 frames."""
        ...


class RmvpePitch:
    """RMVPE (needs `rmvpe.pt`)."""

    def __init__(self, model: Rmvpe) -> None:
        self.model = model

    def f0(self, audio: Tensor) -> np.ndarray:
        return self.model.f0(audio)


class YinPitch:
    """YIN (de Cheveigné & Kawahara 2002) on 1024-sample windows: no weights, cheap on a CPU."""

    def __init__(
        self, threshold: float = 0.15, window: int = 1024, silence_db: float = -50.0
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.silence = 10 ** (silence_db / 20)

    @torch.inference_mode()
    def f0(self, audio: Tensor) -> np.ndarray:
        audio = audio.float().cpu()
        frames = len(audio) // FRAME + 1
        pad = self.window // 2
        padded = (
            F.pad(audio[None, None], (pad, pad), mode="reflect")[0, 0]
            if len(audio) > pad
            else F.pad(audio, (pad, pad))
        )
        windows = padded.unfold(0, self.window, FRAME)[:frames]  # (frames, window)
        tau_min, tau_max = int(RATE / F0_MAX), int(RATE / F0_MIN)
        width = self.window - tau_max
        # Difference function d(τ) = Σ (x_j - x_{j+τ})² over the first `width` samples, via FFT.
        head = torch.fft.rfft(windows[:, :width], n=2 * self.window)
        corr = torch.fft.irfft(
            head.conj() * torch.fft.rfft(windows, n=2 * self.window), n=2 * self.window
        )[:, : tau_max + 1]
        energy = torch.cumsum(windows**2, dim=1)
        e0 = energy[:, width - 1 : width]
        shifted = energy[:, width - 1 : width + tau_max] - F.pad(energy, (1, 0))[:, : tau_max + 1]
        diff = (e0 + shifted - 2 * corr).clamp(min=0)
        taus = torch.arange(1, tau_max + 1, dtype=diff.dtype)
        cmnd = diff[:, 1:] * taus / torch.cumsum(diff[:, 1:], dim=1).clamp(min=1e-12)
        cmnd = torch.cat([torch.ones(frames, 1), cmnd], dim=1)
        cmnd[:, :tau_min] = 2.0
        below = cmnd < self.threshold
        first = torch.where(below.any(dim=1), below.float().argmax(dim=1), cmnd.argmin(dim=1))
        # walk down to the local minimum after the first dip below the threshold
        idx = first.clone()
        for _ in range(tau_max):
            nxt = (idx + 1).clamp(max=tau_max)
            better = cmnd.gather(1, nxt[:, None])[:, 0] < cmnd.gather(1, idx[:, None])[:, 0]
            if not bool(better.any()):
                break
            idx = torch.where(better, nxt, idx)
        value = cmnd.gather(1, idx[:, None])[:, 0]
        left = cmnd.gather(1, (idx - 1).clamp(min=0)[:, None])[:, 0]
        right = cmnd.gather(1, (idx + 1).clamp(max=tau_max)[:, None])[:, 0]
        denom = left - 2 * value + right
        offset = torch.where(
            denom.abs() > 1e-9, 0.5 * (left - right) / denom, torch.zeros_like(denom)
        )
        period = idx.float() + offset.clamp(-1, 1)
        f0 = RATE / period.clamp(min=1)
        rms = windows.pow(2).mean(dim=1).sqrt()
        voiced = (
            (value < 2 * self.threshold) & (rms > self.silence) & (f0 >= F0_MIN) & (f0 <= F0_MAX)
        )
        return torch.where(voiced, f0, torch.zeros_like(f0)).numpy().astype(np.float64)


def shift(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Transpose voiced frames; keep them within [F0_MIN, F0_MAX]; unvoiced stays 0."""
    out = f0 * 2 ** (semitones / 12)
    return np.where(f0 > 0, np.clip(out, F0_MIN, F0_MAX), 0.0)


def coarse(f0: np.ndarray) -> np.ndarray:
    """RVC's 1–255 mel-scale pitch bins (unvoiced → 1)."""
    mel = 1127 * np.log(1 + f0 / 700)
    mel = np.where(mel > 0, (mel - _MEL_MIN) * 254 / (_MEL_MAX - _MEL_MIN) + 1, mel)
    mel = np.clip(mel, 1, 255)
    result: np.ndarray = np.rint(mel).astype(np.int64)
    return result
