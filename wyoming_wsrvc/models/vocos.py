"""Vocos decoder: EnCodec codes (quantizers × frames at 75 Hz) → 24 kHz waveform.

Built from the published `config.yaml` and `pytorch_model.bin` of `charactr/vocos-encodec-24khz`
without `Vocos.from_pretrained`, whose EnCodec feature extractor downloads EnCodec weights that
decoding never uses. Only the decoding parts are loaded: the codebook table
(`feature_extractor.codebook_weights`), the ConvNeXt backbone and the ISTFT head; only those two
classes are accepted from the config (no arbitrary `class_path` is imported).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from ..audio import Audio

_LOGGER = logging.getLogger(__name__)

RATE = 24000
HOP = 320
CODEBOOK_SIZE = 1024
BACKBONE_CLASS = "vocos.models.VocosBackbone"
HEAD_CLASS = "vocos.heads.ISTFTHead"


class VocoderError(ValueError):
    """The Vocos files are not the supported EnCodec-features Vocos."""


def _bandwidth_id(bandwidths: list[float], quantizers: int) -> int:
    """EnCodec 24 kHz uses 1.5 kbps per 2 codebooks: q codebooks ↔ 0.75 * q kbps."""
    kbps = 0.75 * quantizers
    for index, value in enumerate(bandwidths):
        if abs(value - kbps) < 1e-6:
            return index
    raise VocoderError(f"no Vocos bandwidth for {quantizers} codebooks (bandwidths {bandwidths})")


class Vocoder:
    """Decodes EnCodec codes with Vocos; synchronous, torch-only."""

    def __init__(
        self, config_path: Path, weights_path: Path, device: torch.device | str = "cpu"
    ) -> None:
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        config: dict[str, Any] = yaml.safe_load(Path(config_path).read_text())
        try:
            backbone_cfg, head_cfg = config["backbone"], config["head"]
            features_cfg = config["feature_extractor"]["init_args"]
        except (KeyError, TypeError) as err:
            raise VocoderError(f"{config_path}: missing section {err}") from err
        if (
            backbone_cfg.get("class_path") != BACKBONE_CLASS
            or head_cfg.get("class_path") != HEAD_CLASS
        ):
            raise VocoderError(f"{config_path}: only {BACKBONE_CLASS} + {HEAD_CLASS} are supported")
        self.bandwidths = [float(b) for b in features_cfg.get("bandwidths", [1.5, 3.0, 6.0, 12.0])]
        self.backbone = VocosBackbone(**backbone_cfg["init_args"])
        self.head = ISTFTHead(**head_cfg["init_args"])
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "feature_extractor.codebook_weights" not in state:
            raise VocoderError(f"{weights_path}: no feature_extractor.codebook_weights")
        for prefix, module in (("backbone.", self.backbone), ("head.", self.head)):
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(part, strict=True)
            except RuntimeError as err:
                raise VocoderError(f"{weights_path}: {prefix[:-1]}: {err}".splitlines()[0]) from err
        self.codebooks: Tensor = state["feature_extractor.codebook_weights"].float()
        self.device = torch.device(device)
        self.backbone.eval().to(self.device)
        self.head.eval().to(self.device)
        self.codebooks = self.codebooks.to(self.device)
        self.context = self._receptive_frames()

    def _receptive_frames(self) -> int:
        """Frames on each side that one output frame depends on: the convolutions' half-widths
        plus half the ISTFT window (2 frames for the published model)."""
        half_widths = [
            module.kernel_size[0] // 2
            for module in self.backbone.modules()
            if isinstance(module, torch.nn.Conv1d)
        ]
        window = int(getattr(self.head.istft, "win_length", 4 * HOP))
        return sum(half_widths) + -(-window // (2 * HOP))

    def stream(self) -> VocoderStream:
        return VocoderStream(self)

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> Audio:
        """codes: (quantizers, frames) ints in [0, 1024) → Audio at 24 kHz, frames × 320 samples."""
        if codes.dim() != 2:
            raise ValueError(f"codes must be (quantizers, frames), got {tuple(codes.shape)}")
        quantizers, frames = codes.shape
        if frames == 0:
            return Audio.silence(0, RATE)
        offsets = torch.arange(quantizers, device=self.device)[:, None] * CODEBOOK_SIZE
        index = codes.to(self.device).long().clamp(0, CODEBOOK_SIZE - 1) + offsets
        features = torch.nn.functional.embedding(index, self.codebooks).sum(dim=0)  # (frames, 128)
        features = features.T.unsqueeze(0)
        bandwidth = torch.tensor([_bandwidth_id(self.bandwidths, quantizers)], device=self.device)
        hidden = self.backbone(features, bandwidth_id=bandwidth)
        audio = self.head(hidden)
        return Audio.from_tensor(audio[0], RATE)


class VocoderStream:
    """Codes arriving piece by piece → the audio of decoding them whole, emitted as soon as it is
    final: a piece is decoded with `Vocoder.context` frames on both sides, and only the samples
    whose frames have their whole receptive field are kept (equal to whole-sentence decoding to
    float tolerance; tested). Frames without right context wait for the next piece."""

    def __init__(self, vocoder: Vocoder) -> None:
        self.vocoder = vocoder
        self._codes: Tensor | None = None  # frames from `_start` on
        self._start = 0  # global index of the first kept frame
        self._emitted = 0  # frames whose audio has been returned

    def feed(self, codes: Tensor, final: bool) -> Audio:
        """codes (quantizers, k) continuing the sentence → the audio that is now final."""
        buffer = codes if self._codes is None else torch.cat([self._codes, codes], dim=-1)
        self._codes = buffer
        total = self._start + buffer.shape[-1]
        context = self.vocoder.context
        end = total if final else total - context
        if end <= self._emitted:
            return Audio.silence(0, RATE)
        window_start = max(self._start, self._emitted - context)
        local = buffer[:, window_start - self._start :]
        audio = self.vocoder.decode(local).samples
        first = (self._emitted - window_start) * HOP
        out = audio[first : first + (end - self._emitted) * HOP]
        self._emitted = end
        keep_from = max(self._start, end - context)
        self._codes = buffer[:, keep_from - self._start :]
        self._start = keep_from
        return Audio(out, RATE)
