"""The RVC synthesizer, one class for every variant (v1/v2 features, with or without pitch).

Inference path: speaker embedding `emb_g(sid)`; text encoder `enc_p(features, coarse pitch)` →
prior mean/log-scale; z_p = m_p + exp(logs_p)·N(0,1)·0.66666 (z_p = m_p when noise-free); the
flow in reverse; the decoder: the classic (NSF-)HiFi-GAN, or one of Applio's (MRF HiFi-GAN,
RefineGAN in its 3.3+ or 3.2.9 layout; see `mrf_hifigan.py`, `refinegan.py`). Features are at
100 frames/s; the output has `hop = rate / 100` samples per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import nwc
from .crop import Crop, frames, reach
from .layers import LRELU_SLOPE, AttentionEncoder, Flow, ResBlock1, ResBlock2, sine_source
from .mrf_hifigan import MrfHifiganDecoder
from .refinegan import Layout, RefineGanDecoder

NOISE_SCALE = 0.66666
HIFIGAN = "HiFi-GAN"
MRF_HIFIGAN = "MRF HiFi-GAN"
REFINEGAN = "RefineGAN"
VOCODERS = (HIFIGAN, MRF_HIFIGAN, REFINEGAN)


@dataclass(frozen=True)
class SynthesizerConfig:
    """The inference-relevant entries of the `.pth` `config` list, plus what the weights say."""

    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    n_speakers: int
    gin_channels: int
    rate: int
    feature_dim: int
    f0: bool
    vocoder: str = HIFIGAN  # one of VOCODERS, Applio's spelling
    refinegan_layout: Layout = Layout.V3_3
    harmonics: int = 8  # MRF HiFi-GAN's overtones

    @property
    def hop(self) -> int:
        return math.prod(self.upsample_rates)

    @property
    def decoder_name(self) -> str:
        """The vocoder as the log names it, with RefineGAN's layout."""
        if self.vocoder == REFINEGAN:
            return f"{REFINEGAN}, Applio {self.refinegan_layout.value} layout"
        return self.vocoder


@dataclass
class SynthesisResult:
    """Intermediates kept for parity checks: (b, c, t) prior stats and latent; audio (b, 1, t*hop)."""

    m_p: Tensor
    logs_p: Tensor
    z: Tensor
    audio: Tensor


class TextEncoder(nn.Module):
    def __init__(self, cfg: SynthesizerConfig) -> None:
        super().__init__()
        self.hidden = cfg.hidden_channels
        self.out_channels = cfg.inter_channels
        self.emb_phone = nn.Linear(cfg.feature_dim, cfg.hidden_channels)
        self.emb_pitch = nn.Embedding(256, cfg.hidden_channels) if cfg.f0 else None
        self.encoder = AttentionEncoder(
            cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size
        )
        self.proj = nn.Conv1d(cfg.hidden_channels, cfg.inter_channels * 2, 1)

    def forward(self, phone: Tensor, pitch: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        x = self.emb_phone(phone)
        if self.emb_pitch is not None and pitch is not None:
            x = x + self.emb_pitch(pitch)
        x = F.leaky_relu(x * math.sqrt(self.hidden), 0.1).transpose(1, -1)
        mask = torch.ones(x.shape[0], 1, x.shape[2], dtype=x.dtype, device=x.device)
        stats = self.proj(self.encoder(x, mask)) * mask
        m, logs = stats.split(self.out_channels, dim=1)
        return m, logs, mask


class Decoder(nn.Module):
    """HiFi-GAN generator; with `f0`, the NSF variant adding a sine excitation at every stage."""

    def __init__(self, cfg: SynthesizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.upsample_initial_channel
        self.conv_pre = nwc.Conv1d(cfg.inter_channels, ch, 7, 1, padding=3)
        self.cond = nwc.Conv1d(cfg.gin_channels, ch, 1)
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.noise_convs = nn.ModuleList() if cfg.f0 else None
        self.m_source = _Source() if cfg.f0 else None
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
            self.ups.append(nwc.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2))
            for kernel, dilations in zip(
                cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True
            ):
                self.resblocks.append(block(c_out, kernel, list(dilations)))
            if self.noise_convs is not None:
                if i + 1 < len(cfg.upsample_rates):
                    stride = math.prod(cfg.upsample_rates[i + 1 :])
                    self.noise_convs.append(
                        nwc.Conv1d(1, c_out, stride * 2, stride=stride, padding=stride // 2)
                    )
                else:
                    self.noise_convs.append(nwc.Conv1d(1, c_out, 1))
        self.conv_post = nwc.Conv1d(
            ch // 2 ** len(cfg.upsample_rates), 1, 7, 1, padding=3, bias=False
        )
        self.context = self._context()

    def _context(self) -> int:
        """Latent frames an output frame depends on, each way (`crop`)."""
        total, per_frame = reach(self.conv_pre, 1), 1
        kernels = len(self.cfg.resblock_kernel_sizes)
        for i, (up, rate) in enumerate(zip(self.ups, self.cfg.upsample_rates, strict=True)):
            total += reach(up, per_frame)
            per_frame *= rate
            if self.noise_convs is not None:  # the excitation, at the output rate
                total += reach(self.noise_convs[i], self.cfg.hop)
            blocks = self.resblocks[i * kernels : (i + 1) * kernels]
            total += max(cast(ResBlock1 | ResBlock2, block).reach(per_frame) for block in blocks)
        return frames(total + reach(self.conv_post, per_frame))

    def forward(
        self,
        x: Tensor,
        g: Tensor,
        f0: Tensor | None,
        noise: bool,
        generator: torch.Generator | None,
        phase: float = 0.0,
        keep: tuple[int, int] | None = None,
    ) -> Tensor:
        """`keep`: only these frames of the output, computed exactly (`crop.Crop`)."""
        crop = Crop.of(x.shape[-1], keep, self.context)
        source = None
        if self.m_source is not None and f0 is not None:
            # the whole window's excitation (its phase and noise), cut to the frames run
            excitation = sine_source(
                f0, self.cfg.hop, self.cfg.rate, generator=generator, noise=noise, phase=phase
            )
            source = self.m_source(crop.take(excitation, self.cfg.hop))
        x = self.conv_pre(crop.take(x)) + self.cond(g)
        kernels = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            if self.noise_convs is not None and source is not None:
                x = x + self.noise_convs[i](source)
            blocks = self.resblocks[i * kernels : (i + 1) * kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / kernels
        return crop.kept(torch.tanh(self.conv_post(F.leaky_relu(x))), self.cfg.hop)


def build_decoder(cfg: SynthesizerConfig) -> nn.Module:
    """The decoder the voice was trained with; each takes (z, g, f0 Hz, noise, generator)."""
    if cfg.vocoder == MRF_HIFIGAN:
        return MrfHifiganDecoder(
            cfg.inter_channels,
            cfg.upsample_initial_channel,
            cfg.upsample_rates,
            cfg.upsample_kernel_sizes,
            cfg.resblock_kernel_sizes,
            cfg.resblock_dilation_sizes,
            cfg.gin_channels,
            cfg.rate,
            cfg.harmonics,
        )
    if cfg.vocoder == REFINEGAN:
        return RefineGanDecoder(
            cfg.inter_channels, cfg.upsample_rates, cfg.rate, cfg.refinegan_layout
        )
    return Decoder(cfg)


class _Source(nn.Module):
    """Merges the excitation (one harmonic) through `l_linear` and tanh: (b, t) → (b, 1, t)."""

    def __init__(self) -> None:
        super().__init__()
        self.l_linear = nn.Linear(1, 1)

    def forward(self, excitation: Tensor) -> Tensor:
        merged = torch.tanh(self.l_linear(excitation[..., None].to(self.l_linear.weight.dtype)))
        return merged.transpose(1, 2)


class Synthesizer(nn.Module):
    """features (b, t, 256|768) at 100 frames/s + pitch → audio (b, 1, t * hop) at `cfg.rate`."""

    def __init__(self, cfg: SynthesizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.flow = Flow(cfg.inter_channels, cfg.hidden_channels, cfg.gin_channels)
        self.dec = build_decoder(cfg)
        self.emb_g = nn.Embedding(cfg.n_speakers, cfg.gin_channels)

    @torch.inference_mode()
    def infer(
        self,
        phone: Tensor,
        f0_coarse: Tensor | None,
        f0_hz: Tensor | None,
        sid: int = 0,
        noise: bool = True,
        generator: torch.Generator | None = None,
        phase: float = 0.0,
        keep: tuple[int, int] | None = None,
    ) -> SynthesisResult:
        """`phone` (b, t, dim); `f0_coarse` (b, t) ints 1..255; `f0_hz` (b, t) Hz (pitch models).
        `keep` = (first, end) frames: the audio of only those (b, 1, (end - first) · hop); the
        decoder then runs on them and its context alone (`crop`), the same samples up to float
        rounding.

        `noise=False` is the deterministic mode: no prior sampling noise, no NSF noise. `phase`
        (turns) is the pitch excitation's phase at the first frame, for audio converted in
        pieces that must continue the phase of what came before.
        """
        if not 0 <= sid < self.cfg.n_speakers:
            raise ValueError(f"speaker id {sid} out of range 0..{self.cfg.n_speakers - 1}")
        if self.cfg.f0 and (f0_coarse is None or f0_hz is None):
            raise ValueError("this voice needs pitch (f0_coarse and f0_hz)")
        dtype = self.emb_g.weight.dtype
        g = self.emb_g(torch.tensor([sid], device=phone.device)).unsqueeze(-1)
        m_p, logs_p, mask = self.enc_p(phone.to(dtype), f0_coarse if self.cfg.f0 else None)
        z_p = m_p
        if noise:
            eps = torch.randn(m_p.shape, generator=generator, device=m_p.device).to(dtype)
            z_p = (m_p + torch.exp(logs_p) * eps * NOISE_SCALE) * mask
        z = self.flow.reverse(z_p, mask, g)
        f0 = f0_hz if self.cfg.f0 else None
        audio = self.dec(z * mask, g, f0, noise, generator, phase, keep)
        return SynthesisResult(m_p, logs_p, z, audio)
