"""Content features for RVC: HuBERT base / ContentVec, without fairseq or transformers.

16 kHz audio (no normalisation) → conv front-end (7 layers, 320× down) → feature projection →
convolutional positional embedding → post-LN transformer → features at 50 frames/s. RVC v1
voices take layer 9 through `final_proj` (256-dim), v2 voices layer 12 (768-dim).

Two file formats load: the Hugging Face layout (`config.json` + `pytorch_model.bin` or a bare
state dict with HF key names, as RVC's own conversion ships) and fairseq's `hubert_base.pt`,
read with `weights_only=True` by allow-listing inert stand-ins for the few fairseq/omegaconf
classes its pickle names (nothing from fairseq is imported or executed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frames import CONTENT_HOP

_LOGGER = logging.getLogger(__name__)


class ContentModelError(ValueError):
    """The content model file is unusable; the message names the file."""


@dataclass(frozen=True)
class HubertConfig:
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    conv_dim: int = 512
    conv_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    pos_kernel: int = 128
    pos_groups: int = 16
    proj_dim: int = 256  # final_proj output (v1 features)

    @classmethod
    def from_hf(cls, data: dict[str, Any]) -> HubertConfig:
        """From a Hugging Face `config.json`; only HuBERT base's layout (post-LN, group norm)."""
        if data.get("do_stable_layer_norm") or data.get("feat_extract_norm", "group") != "group":
            raise ValueError(
                "not HuBERT base's layout (do_stable_layer_norm / feat_extract_norm 'layer')"
            )
        return cls(
            hidden=int(data.get("hidden_size", 768)),
            layers=int(data.get("num_hidden_layers", 12)),
            heads=int(data.get("num_attention_heads", 12)),
            intermediate=int(data.get("intermediate_size", 3072)),
            conv_dim=int(data.get("conv_dim", [512])[0]),
            conv_kernels=tuple(data.get("conv_kernel", cls.conv_kernels)),
            conv_strides=tuple(data.get("conv_stride", cls.conv_strides)),
            pos_kernel=int(data.get("num_conv_pos_embeddings", 128)),
            pos_groups=int(data.get("num_conv_pos_embedding_groups", 16)),
            proj_dim=int(data.get("classifier_proj_size", 256)),
        )


class _ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.layer_norm = nn.GroupNorm(c_out, c_out) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x)


class _FeatureExtractor(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(
            [
                _ConvLayer(1 if i == 0 else cfg.conv_dim, cfg.conv_dim, k, s, norm=i == 0)
                for i, (k, s) in enumerate(zip(cfg.conv_kernels, cfg.conv_strides, strict=True))
            ]
        )


class _FeatureProjection(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.conv_dim)
        self.projection = nn.Linear(cfg.conv_dim, cfg.hidden)


class _PositionalConv(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            cfg.hidden,
            cfg.hidden,
            cfg.pos_kernel,
            padding=cfg.pos_kernel // 2,
            groups=cfg.pos_groups,
        )
        self.trim = 1 if cfg.pos_kernel % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return F.gelu(y).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.k_proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.v_proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.out_proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        )
        result: Tensor = self.out_proj(out.transpose(1, 2).reshape(b, t, c))
        return result


class _FeedForward(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden, cfg.intermediate)
        self.output_dense = nn.Linear(cfg.intermediate, cfg.hidden)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.output_dense(F.gelu(self.intermediate_dense(x)))
        return result


class _Layer(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden)
        self.feed_forward = _FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer_norm(x + self.attention(x))
        result: Tensor = self.final_layer_norm(x + self.feed_forward(x))
        return result


class _Encoder(nn.Module):
    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.pos_conv_embed = _PositionalConv(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden)
        self.layers = nn.ModuleList([_Layer(cfg) for _ in range(cfg.layers)])


class Hubert(nn.Module):
    """HuBERT base with Hugging Face parameter names, plus RVC's `final_proj` (v1 features) when
    the model has one."""

    def __init__(self, cfg: HubertConfig, final_proj: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = _FeatureExtractor(cfg)
        self.feature_projection = _FeatureProjection(cfg)
        self.encoder = _Encoder(cfg)
        self.final_proj = nn.Linear(cfg.hidden, cfg.proj_dim) if final_proj else None

    def forward(self, audio: Tensor, layer: int, project: bool) -> Tensor:
        """audio (b, samples) at 16 kHz → (b, frames, hidden or proj_dim), frames ≈ samples/320."""
        x = audio[:, None]
        for conv in self.feature_extractor.conv_layers:
            x = conv(x)
        x = self.feature_projection.projection(
            self.feature_projection.layer_norm(x.transpose(1, 2))
        )
        x = x + self.encoder.pos_conv_embed(x)
        x = self.encoder.layer_norm(x)
        for block in list(self.encoder.layers)[:layer]:
            x = block(x)
        hidden: Tensor = x
        if not project:
            return hidden
        if self.final_proj is None:
            raise ContentModelError("this content model has no final_proj: v1 voices need it")
        projected: Tensor = self.final_proj(x)
        return projected


def _fairseq_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a fairseq HuBERT state dict to the Hugging Face layout used here."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        if key.startswith("feature_extractor.conv_layers."):
            parts = key.split(".")
            sub = {"0": "conv", "2": "layer_norm"}.get(parts[3])
            if sub is None:
                continue
            new = ".".join([*parts[:3], sub, *parts[4:]])
        elif key.startswith("post_extract_proj."):
            new = key.replace("post_extract_proj.", "feature_projection.projection.")
        elif key.startswith("layer_norm."):
            new = key.replace("layer_norm.", "feature_projection.layer_norm.")
        elif key.startswith("encoder.pos_conv.0."):
            new = key.replace("encoder.pos_conv.0.", "encoder.pos_conv_embed.conv.")
        elif key.startswith("encoder.layers."):
            new = (
                key.replace(".self_attn_layer_norm.", ".layer_norm.")
                .replace(".self_attn.", ".attention.")
                .replace(".fc1.", ".feed_forward.intermediate_dense.")
                .replace(".fc2.", ".feed_forward.output_dense.")
            )
        elif key in ("mask_emb", "label_embs_concat") or key.startswith("label_embs"):
            continue
        out[new] = value
    return out


def _fold_pos_conv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The positional conv is weight-normed over dim 2: w = g · v / ‖v‖ (norm over dims 0, 1)."""
    prefix = "encoder.pos_conv_embed.conv."
    g = state.pop(prefix + "weight_g", None)
    if g is None:
        g = state.pop(prefix + "parametrizations.weight.original0", None)
    v = state.pop(prefix + "weight_v", None)
    if v is None:
        v = state.pop(prefix + "parametrizations.weight.original1", None)
    if g is not None and v is not None:
        norm = v.float().norm(dim=(0, 1), keepdim=True)
        state[prefix + "weight"] = v.float() * (g.float() / norm)
    return state


class _Stub:
    """Inert stand-in for classes a fairseq checkpoint names (only its state is kept)."""

    def __setstate__(self, state: object) -> None:
        self.state = state


_STUBS = [
    (_Stub, "fairseq.data.dictionary.Dictionary"),
    (argparse.Namespace, "argparse.Namespace"),
]


def _load_any(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_STUBS):  # type: ignore[arg-type]
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ContentModelError(f"{path}: file not found") from None
    except Exception as err:  # refused pickles, truncation, foreign formats
        raise ContentModelError(
            f"{path}: not a loadable HuBERT/ContentVec file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]})"
        ) from err


def _hf_config(path: Path) -> HubertConfig:
    try:
        return HubertConfig.from_hf(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ContentModelError(f"{path}: {err}") from err


def load_hubert(
    path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Hubert:
    """Load fairseq `hubert_base.pt`, an HF folder (`config.json` + weights) or an HF state dict."""
    cfg = HubertConfig()
    if path.is_dir():
        config = path / "config.json"
        if config.is_file():
            cfg = _hf_config(config)
        weights = path / "pytorch_model.bin"
        if not weights.is_file():
            raise ContentModelError(f"{path}: no pytorch_model.bin")
        data = _load_any(weights)
    else:
        data = _load_any(path)
        sibling = path.with_name("config.json")
        if sibling.is_file():
            cfg = _hf_config(sibling)
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        state = _fairseq_to_hf(data["model"])  # fairseq checkpoint
    elif isinstance(data, dict) and all(isinstance(v, Tensor) for v in data.values()):
        state = {k.removeprefix("hubert."): v for k, v in data.items()}
        if "encoder.pos_conv.0.weight_v" in state:
            state = _fairseq_to_hf(state)
    else:
        raise ContentModelError(f"{path}: neither a fairseq checkpoint nor a state dict")
    state = _fold_pos_conv({k: v for k, v in state.items() if k != "masked_spec_embed"})
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")}
    hidden = state.get("feature_projection.projection.weight")
    if hidden is None:
        raise ContentModelError(f"{path}: no feature projection: not a HuBERT model")
    proj = state.get("final_proj.weight")
    cfg = HubertConfig(
        hidden=int(hidden.shape[0]),
        layers=len(layers),
        heads=cfg.heads,
        intermediate=int(state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        conv_dim=int(hidden.shape[1]),
        conv_kernels=cfg.conv_kernels,
        conv_strides=cfg.conv_strides,
        pos_kernel=int(state["encoder.pos_conv_embed.conv.weight"].shape[2]),
        pos_groups=cfg.pos_groups,
        proj_dim=int(proj.shape[0]) if proj is not None else cfg.proj_dim,
    )
    model = Hubert(cfg, final_proj=proj is not None)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as err:
        raise ContentModelError(f"{path}: unsupported layout: {str(err).splitlines()[0]}") from err
    return model.eval().to(device=device, dtype=dtype)


class ContentEncoder:
    """Features for a voice version: `features(audio16k, version)` → (1, frames, 256|768)."""

    @property
    def projects(self) -> bool:
        """Whether it can give v1 (256-dim, `final_proj`) features."""
        return self.model.final_proj is not None

    V1_LAYER = 9
    V2_LAYER = 12

    def __init__(self, model: Hubert) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    def layer_for(self, version: str) -> int:
        wanted = self.V1_LAYER if version == "v1" else self.V2_LAYER
        return min(wanted, self.model.cfg.layers)

    @torch.inference_mode()
    def features(self, audio: Tensor, version: str) -> Tensor:
        """audio (samples,) float at 16 kHz → (1, frames at 50/s, 256 for v1 | 768 for v2)."""
        if len(audio) < 400:
            audio = F.pad(audio, (0, 400 - len(audio)))
        x = audio.to(self.device, self.dtype)[None]
        result: Tensor = self.model(x, self.layer_for(version), project=version == "v1").float()
        return result


class ContentModels:
    """One shared content model per embedder (a name of `embedders.KNOWN` or a custom path),
    loaded by `load` when a voice first needs it."""

    def __init__(
        self,
        load: Callable[[str], ContentEncoder] | None = None,
        loaded: dict[str, ContentEncoder] | None = None,
    ) -> None:
        self._load = load
        self._models: dict[str, ContentEncoder] = dict(loaded or {})

    def get(self, embedder: str) -> ContentEncoder:
        if embedder not in self._models:
            if self._load is None:
                raise ContentModelError(f"content model {embedder!r} is not available")
            self._models[embedder] = self._load(embedder)
            _LOGGER.info("Loaded content model %s", embedder)
        return self._models[embedder]

    @property
    def loaded(self) -> list[str]:
        return list(self._models)


def frames_for(samples: int) -> int:
    """Number of 50 Hz feature frames HuBERT gives for `samples` at 16 kHz."""
    return max(0, math.floor((samples - 400) / CONTENT_HOP) + 1)
