"""Read community RVC voice files (`.pth`): safely, strictly, with clear refusals.

The file is a dict: `weight` (generator state dict, usually fp16, without `enc_q.*`), `config`
(18 positional hyper-parameters), `info`, `sr`, `f0`, `version` (missing in the oldest v1 files).
Loaded with `weights_only=True` (a file whose pickle would run code is refused), the variant is
read from the weights themselves (feature width from `enc_p.emb_phone`, pitch from `emb_pitch`),
the speaker count from `emb_g.weight`, weight norm (`weight_g`/`weight_v` or
`parametrizations.weight.original0/1`) is folded into plain weights, and the keys must match
the network exactly once the training-only `enc_q.*` are dropped.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import nwc
from .refinegan import SPEAKER_WIDTH, Layout
from .synthesizer import (
    HIFIGAN,
    MRF_HIFIGAN,
    REFINEGAN,
    VOCODERS,
    Synthesizer,
    SynthesizerConfig,
)

_LOGGER = logging.getLogger(__name__)

RATES = {"24k": 24000, "32k": 32000, "40k": 40000, "48k": 48000}
# Keys only one decoder has: how a file without a `vocoder` field (or with a wrong one) is read.
DECODER_KEYS = {MRF_HIFIGAN: "dec.mrfs.", REFINEGAN: "dec.upsample_conv_blocks."}


class RvcCheckpointError(ValueError):
    """A voice file is unusable; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class RvcVoiceFile:
    path: Path
    config: SynthesizerConfig
    version: str
    info: str
    weights: dict[str, Tensor]  # folded, float32
    embedder: str | None = None  # Applio's `embedder_model`, as the file says it


def _read(path: Path) -> dict[str, Any]:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RvcCheckpointError(path, "file not found") from None
    except pickle.UnpicklingError as err:
        raise RvcCheckpointError(
            path,
            f"refused: loading it would run code or needs foreign classes ({err})".split("\n")[0],
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise RvcCheckpointError(
            path, f"truncated or not a PyTorch file ({type(err).__name__})"
        ) from err
    if not isinstance(data, dict):
        raise RvcCheckpointError(path, "not an RVC voice file (expected a dict)")
    if "weight" not in data or "config" not in data:
        if "model" in data:
            raise RvcCheckpointError(
                path, "this is a training checkpoint (G_*.pth); export the small voice model"
            )
        raise RvcCheckpointError(path, "not an RVC voice file (no 'weight'/'config')")
    return data


def _fold_weight_norm(path: Path, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """w = g · v / ‖v‖ with the norm over every axis but 0 (as torch's weight_norm, dim=0)."""
    out: dict[str, Tensor] = {}
    for key, value in weights.items():
        if key.endswith(".parametrizations.weight.original0"):
            key = key.replace(".parametrizations.weight.original0", ".weight_g")
        elif key.endswith(".parametrizations.weight.original1"):
            key = key.replace(".parametrizations.weight.original1", ".weight_v")
        out[key] = value.float()
    folded: dict[str, Tensor] = {}
    for key, value in out.items():
        if key.endswith(".weight_g"):
            stem = key[: -len(".weight_g")]
            v = out.get(stem + ".weight_v")
            if v is None:
                raise RvcCheckpointError(path, f"{key} without its weight_v")
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
            folded[stem + ".weight"] = v * (value / norm)
        elif not key.endswith(".weight_v"):
            folded[key] = value
    return folded


def _config(
    path: Path, data: dict[str, Any], weights: dict[str, Tensor]
) -> tuple[SynthesizerConfig, str]:
    raw = data["config"]
    if not isinstance(raw, list | tuple) or len(raw) < 18:
        raise RvcCheckpointError(
            path,
            f"config has {len(raw) if isinstance(raw, list | tuple) else '?'} entries, expected 18",
        )
    if "enc_p.emb_phone.weight" not in weights or "emb_g.weight" not in weights:
        raise RvcCheckpointError(path, "weights lack enc_p.emb_phone/emb_g: not an RVC synthesizer")
    feature_dim = int(weights["enc_p.emb_phone.weight"].shape[1])
    if feature_dim not in (256, 768):
        raise RvcCheckpointError(
            path, f"feature width {feature_dim} is neither v1 (256) nor v2 (768)"
        )
    version = "v1" if feature_dim == 256 else "v2"
    stated = data.get("version", "v1")
    if stated != version:
        _LOGGER.warning(
            "%s says version %s but its weights are %s; using %s", path, stated, version, version
        )
    f0 = "enc_p.emb_pitch.weight" in weights
    if "f0" in data and bool(data["f0"]) != f0:
        _LOGGER.warning(
            "%s says f0=%s but its weights say %s; using the weights", path, data["f0"], f0
        )
    vocoder = _vocoder(path, data, weights, f0)
    rate_raw = raw[17]
    rate = RATES.get(rate_raw, rate_raw) if isinstance(rate_raw, str) else rate_raw
    if not isinstance(rate, int) or rate <= 0:
        raise RvcCheckpointError(path, f"unknown sample rate {rate_raw!r}")
    try:
        cfg = SynthesizerConfig(
            inter_channels=int(raw[2]),
            hidden_channels=int(raw[3]),
            filter_channels=int(raw[4]),
            n_heads=int(raw[5]),
            n_layers=int(raw[6]),
            kernel_size=int(raw[7]),
            resblock=str(raw[9]),
            resblock_kernel_sizes=tuple(int(k) for k in raw[10]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in raw[11]),
            upsample_rates=tuple(int(u) for u in raw[12]),
            upsample_initial_channel=int(raw[13]),
            upsample_kernel_sizes=tuple(int(k) for k in raw[14]),
            n_speakers=int(weights["emb_g.weight"].shape[0]),
            gin_channels=int(raw[16]),
            rate=rate,
            feature_dim=feature_dim,
            f0=f0,
            **_decoder_details(path, vocoder, weights, int(raw[16])),
        )
    except (TypeError, ValueError) as err:
        raise RvcCheckpointError(path, f"malformed config: {err}") from err
    if cfg.hop * 100 != cfg.rate:
        raise RvcCheckpointError(
            path, f"upsampling {cfg.upsample_rates} does not give {cfg.rate} Hz at 100 frames/s"
        )
    return cfg, version


def _vocoder(path: Path, data: dict[str, Any], weights: dict[str, Tensor], f0: bool) -> str:
    """The decoder named by the file (Applio's `vocoder`), checked against its weights."""
    by_keys = next(
        (
            name
            for name, prefix in DECODER_KEYS.items()
            if any(k.startswith(prefix) for k in weights)
        ),
        HIFIGAN,
    )
    stated = data.get("vocoder")
    if stated is None:
        vocoder = by_keys
    elif stated not in VOCODERS:
        raise RvcCheckpointError(
            path, f"unknown vocoder {stated!r} (supported: {', '.join(VOCODERS)})"
        )
    elif stated != by_keys:
        raise RvcCheckpointError(
            path, f"vocoder {stated} stated, but the decoder weights are {by_keys}'s"
        )
    else:
        vocoder = stated
    if vocoder != HIFIGAN and not f0:
        raise RvcCheckpointError(
            path,
            f"vocoder {vocoder} without pitch: Applio cannot train such a voice, "
            "and the decoder needs pitch",
        )
    return vocoder


def _decoder_details(
    path: Path, vocoder: str, weights: dict[str, Tensor], gin_channels: int
) -> dict[str, Any]:
    """What the config does not say about Applio's decoders: RefineGAN's layout, MRF's overtones."""
    if vocoder == MRF_HIFIGAN:
        merge = weights.get("dec.m_source.l_linear.weight")
        if merge is None or merge.dim() != 2:
            raise RvcCheckpointError(path, f"vocoder {vocoder}: no dec.m_source.l_linear weight")
        return {"vocoder": vocoder, "harmonics": int(merge.shape[1]) - 1}
    if vocoder == REFINEGAN:
        pre = weights.get("dec.pre_conv.weight")
        layout = Layout.from_pre_conv_width(int(pre.shape[0])) if pre is not None else None
        if layout is None or pre is None:
            width = "missing" if pre is None else f"{int(pre.shape[0])} output channels"
            raise RvcCheckpointError(
                path,
                f"vocoder {vocoder}: shapes match neither released layout "
                f"(dec.pre_conv {width}; Applio 3.3+ has 16, 3.2.9 has 256)",
            )
        if gin_channels != SPEAKER_WIDTH:
            raise RvcCheckpointError(
                path,
                f"vocoder {vocoder} needs {SPEAKER_WIDTH}-wide speaker conditioning, "
                f"the config says gin_channels={gin_channels}",
            )
        return {"vocoder": vocoder, "refinegan_layout": layout}
    return {"vocoder": vocoder}


def named_embedder(path: Path) -> object:
    """The `embedder_model` a voice file names (None if it names none or cannot be read: the
    full `read_voice` reports that). Memory-mapped: cheap, for listing the files to download."""
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError):
        return None
    return data.get("embedder_model") if isinstance(data, dict) else None


def read_voice(path: Path) -> RvcVoiceFile:
    """Read and validate a voice file (no network built yet)."""
    data = _read(path)
    weights = data["weight"]
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise RvcCheckpointError(path, "'weight' is not a dict of tensors")
    weights = {k: v for k, v in weights.items() if not k.startswith("enc_q.")}
    folded = _fold_weight_norm(path, weights)
    cfg, version = _config(path, data, folded)
    embedder = data.get("embedder_model")
    return RvcVoiceFile(
        path,
        cfg,
        version,
        str(data.get("info", "")),
        folded,
        None if embedder is None else str(embedder),
    )


def load_synthesizer(
    voice: RvcVoiceFile, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Synthesizer:
    """Build the network for `voice` and load its weights with strict key and shape checks."""
    with torch.device("meta"):
        model = Synthesizer(voice.config)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(voice.weights), set(voice.weights) - expected
    if missing or unexpected:
        detail = "; ".join(
            part
            for part in (
                f"missing {sorted(missing)[:4]}" if missing else "",
                f"unexpected {sorted(unexpected)[:4]}" if unexpected else "",
            )
            if part
        )
        raise RvcCheckpointError(voice.path, f"unsupported network layout: {detail}")
    try:
        model.load_state_dict(voice.weights, strict=True, assign=True)
    except RuntimeError as err:
        raise RvcCheckpointError(
            voice.path, f"shape mismatch: {str(err).splitlines()[-1].strip()}"
        ) from err
    return nwc.lay_out(model.eval().to(device=device, dtype=dtype))


# -- writing: random weights in this format (tests, benchmark) --------------------------------
