"""RMVPE pitch estimation (the RVC users' default), inference only.

16 kHz audio → log-mel (n_fft = win = 1024, hop 160, 128 HTK mel bands with Slaney area
normalisation, 30–8000 Hz, centred reflect-padded STFT magnitude, log(clamp(x, 1e-5))) → a
U-Net + BiGRU (`E2E`) → 360-bin salience per 10 ms frame → f0 in Hz (a local weighted average of
the 9 bins around the peak in cents, 0 where the peak salience is ≤ 0.03).

The network's shape (blocks, layers, channels, GRU depth) is read from the state dict, so the
published `rmvpe.pt` (E2E(4, 1, (2, 2))) and smaller variants load alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frames import FRAME, RATE

N_MELS = 128
N_BINS = 360
THRESHOLD = 0.03
CENTS = 20 * np.arange(N_BINS) + 1997.3794084376191


class RmvpeError(ValueError):
    """The RMVPE weights file is unusable; the message names the file."""


@dataclass(frozen=True)
class RmvpeShape:
    n_blocks: int = 4
    n_gru: int = 1
    en_de_layers: int = 5
    inter_layers: int = 4
    en_out_channels: int = 16


class ConvBlockRes(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.conv(x) + (self.shortcut(x) if self.shortcut is not None else x)
        return result


class ResBlocks(nn.Module):
    """`n_blocks` ConvBlockRes in a row (`.conv.{i}`), optionally followed by 2×2 average pooling."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            [ConvBlockRes(c_in if i == 0 else c_out, c_out) for i in range(n_blocks)]
        )
        self.pool = pool

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.conv:
            x = block(x)
        return x, (F.avg_pool2d(x, 2) if self.pool else x)


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_blocks: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList(
            [ConvBlockRes(c_out * 2 if i == 0 else c_out, c_out) for i in range(n_blocks)]
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class _Stack(nn.Module):
    def __init__(self, layers: list[nn.Module], bn: int | None = None) -> None:
        super().__init__()
        if bn is not None:
            self.bn = nn.BatchNorm2d(bn)
        self.layers = nn.ModuleList(layers)


class UNet(nn.Module):
    def __init__(self, shape: RmvpeShape) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        c_in, c_out = 1, shape.en_out_channels
        for _ in range(shape.en_de_layers):
            enc.append(ResBlocks(c_in, c_out, shape.n_blocks, pool=True))
            c_in, c_out = c_out, c_out * 2
        self.encoder = _Stack(enc, bn=1)
        inter: list[nn.Module] = [
            ResBlocks(c_in if i == 0 else c_out, c_out, shape.n_blocks, pool=False)
            for i in range(shape.inter_layers)
        ]
        self.intermediate = _Stack(inter)
        dec: list[nn.Module] = []
        for _ in range(shape.en_de_layers):
            dec.append(DecoderBlock(c_out, c_out // 2, shape.n_blocks))
            c_out //= 2
        self.decoder = _Stack(dec)

    def forward(self, x: Tensor) -> Tensor:
        x = self.encoder.bn(x)
        skips = []
        for layer in self.encoder.layers:
            skip, x = layer(x)
            skips.append(skip)
        for layer in self.intermediate.layers:
            x, _ = layer(x)
        for layer, skip in zip(self.decoder.layers, reversed(skips), strict=True):
            x = layer(x, skip)
        return x


class BiGRU(nn.Module):
    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(
            3 * N_MELS, 256, num_layers=n_layers, batch_first=True, bidirectional=True
        )

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.gru(x)[0]
        return result


class E2E(nn.Module):
    """log-mel (b, 128, t) with t a multiple of 32 → salience (b, t, 360)."""

    def __init__(self, shape: RmvpeShape) -> None:
        super().__init__()
        self.unet = UNet(shape)
        self.cnn = nn.Conv2d(shape.en_out_channels, 3, 3, padding=1)
        self.fc = nn.Sequential(
            BiGRU(shape.n_gru), nn.Linear(512, N_BINS), nn.Dropout(0.25), nn.Sigmoid()
        )

    def forward(self, mel: Tensor) -> Tensor:
        x = self.cnn(self.unet(mel.transpose(-1, -2).unsqueeze(1)))
        result: Tensor = self.fc(x.transpose(1, 2).flatten(-2))
        return result


def shape_of(state: dict[str, Tensor]) -> RmvpeShape:
    """Read the network's hyper-parameters from its state-dict keys."""

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})

    return RmvpeShape(
        n_blocks=count("unet.encoder.layers.0.conv."),
        n_gru=len(
            [k for k in state if k.startswith("fc.0.gru.weight_ih_l") and "reverse" not in k]
        ),
        en_de_layers=count("unet.encoder.layers."),
        inter_layers=count("unet.intermediate.layers."),
        en_out_channels=int(state["unet.encoder.layers.0.conv.0.conv.0.weight"].shape[0]),
    )


class Rmvpe:
    """Loaded RMVPE model; `f0(audio16k)` gives Hz per 10 ms frame."""

    def __init__(
        self, path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise RmvpeError(f"{path}: file not found") from None
        except Exception as err:  # refused pickles, truncation, foreign formats
            raise RmvpeError(
                f"{path}: not a loadable RMVPE state dict ({type(err).__name__})"
            ) from err
        if not isinstance(state, dict) or "unet.encoder.layers.0.conv.0.conv.0.weight" not in state:
            raise RmvpeError(f"{path}: not an RMVPE (E2E) state dict")
        self.model = E2E(shape_of(state))
        try:
            self.model.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                strict=True,
            )
        except RuntimeError as err:
            raise RmvpeError(f"{path}: {str(err).splitlines()[0]}") from err
        self.device = torch.device(device)
        self.dtype = dtype
        self.model.eval().to(self.device, dtype)
        if self.device.type == "cpu":
            # oneDNN's convolutions run faster on channels-last data (measured for the whole
            # model: 1.1x on AVX2, 1.3x on AVX-512); each layer's output keeps its weights' layout
            for layer in self.model.modules():
                if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                    layer.weight.data = layer.weight.data.contiguous(
                        memory_format=torch.channels_last
                    )
        fbanks = _mel_filters()
        self.mel_basis = fbanks.to(self.device)
        self.window = torch.hann_window(1024, device=self.device)

    @torch.inference_mode()
    def mel(self, audio: Tensor) -> Tensor:
        """(samples,) float at 16 kHz → (1, 128, frames) log-mel, frames = samples // 160 + 1."""
        spec = torch.stft(
            audio.to(self.device, torch.float32)[None],
            1024,
            FRAME,
            1024,
            self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        return torch.log(torch.clamp(self.mel_basis @ spec, min=1e-5))

    @torch.inference_mode()
    def salience(self, mel: Tensor) -> Tensor:
        """(1, 128, frames) → (frames, 360). Frames are zero-padded to a multiple of 32 (the
        U-Net halves the time axis five times), as the reference implementation does."""
        frames = mel.shape[-1]
        padded = F.pad(mel, (0, 32 * ((frames - 1) // 32 + 1) - frames))
        result: Tensor = self.model(padded.to(self.dtype))[0, :frames].float()
        return result

    def f0(self, audio: Tensor, threshold: float = THRESHOLD) -> np.ndarray:
        """Hz per 10 ms frame (0 = unvoiced) for (samples,) float audio at 16 kHz."""
        return decode(self.salience(self.mel(audio)).cpu().numpy(), threshold)


def decode(salience: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Weighted average of the 9 bins around each frame's peak, in cents, then Hz."""
    frames = salience.shape[0]
    center = salience.argmax(axis=1)
    padded = np.pad(salience, ((0, 0), (4, 4)))
    cents = np.pad(CENTS, (4, 4))
    index = center[:, None] + np.arange(9)[None, :]
    weights = padded[np.arange(frames)[:, None], index]
    average = (weights * cents[index]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)
    average[salience.max(axis=1) <= threshold] = 0
    f0 = 10 * 2 ** (average / 1200)
    f0[average == 0] = 0
    result: np.ndarray = f0
    return result


def _mel_filters() -> Tensor:
    """(128, 513) HTK mel filterbank with Slaney area normalisation, 30–8000 Hz at 16 kHz."""
    import torchaudio.functional as AF

    result: Tensor = AF.melscale_fbanks(
        513, 30.0, 8000.0, N_MELS, RATE, norm="slaney", mel_scale="htk"
    ).T
    return result
