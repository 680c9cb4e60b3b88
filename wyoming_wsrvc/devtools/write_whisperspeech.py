"""WhisperSpeech `.model` files (T2S, S2A) with random weights, in upstream's format."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..models.whisperspeech.checkpoint import s2a_config, t2s_config
from ..models.whisperspeech.s2a import S2A
from ..models.whisperspeech.t2s import T2S
from .random_weights import randomize

T2S_TUNABLES: dict[str, Any] = {
    "init_std": 1,
    "embeddings_std": 0.01,
    "embeddings_lr_scale": 5,
    "embedding_projector_lr_scale": 2.5,
    "output_mult": 0.35,
    "query_mult": 1.0,
    "encoder_depth_ratio": 0.25,
    "causal_encoder": True,
    "eot_dropout_p": 0.5,
    "cps_input": True,
    "cps_bins": 32,
    "padding_token_offset": 0,
    "lr0": 0.0015,
    "clip_gradient_norm": 0.2,
    "weight_decay": 0.1,
    "warmup_steps": 4000,
    "random": False,
}
S2A_TUNABLES: dict[str, Any] = {
    "init_std": 9,
    "embeddings_std": 0.2,
    "embeddings_lr_scale": 10,
    "output_mult": 5.6,
    "query_mult": 0.3,
    "encoder_depth_ratio": 0.25,
    "linear_heads": False,
    "rope": True,
    "q0_loss_mult": 1,
    "causal_encoder": False,
    "lr0": 0.003,
    "clip_gradient_norm": 2,
    "weight_decay": 0.001,
    "warmup_steps": 2000,
    "random": False,
    "random_finetune": False,
    "force_hidden_to_emb": False,
}
# (depth, n_head) of the published sizes (upstream `_make_model`).
SIZES = {"tiny": (4, 6), "base": (6, 8), "small": (12, 12), "medium": (24, 16)}


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper-style [sin | cos] positions (what upstream stores in its buffers)."""
    increment = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


T2S_CONFIG: dict[str, Any] = {
    "head_width": 64,
    "ffn_mult": 4,
    "stoks_width": 64,
    "ttoks_width": None,
    "ttoks_len": 550,
    "stoks_len": 750,
    "ttoks_codes": 256,
    "stoks_codes": 513,
}
S2A_CONFIG: dict[str, Any] = {
    "ctx_n": 2250,
    "stoks_len": 750,
    "stoks_codes": 513,
    "stoks_width": 64,
    "spk_width": 192,
    "atoks_width": None,
    "head_width": 64,
    "ffn_mult": 4,
    "quantizers": 4,
    "speaker_map": {"1": 0},
}


def _merged(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`defaults` updated by `overrides`; a None override removes the key (an old checkpoint)."""
    merged = {**defaults, **(overrides or {})}
    return {k: v for k, v in merged.items() if v is not None}


def write_t2s(
    path: Path,
    depth: int,
    n_head: int,
    seed: int = 0,
    legacy: bool = False,
    config: dict[str, Any] | None = None,
    tunables: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """A T2S `.model` file in upstream's format with random weights (fp16 values with `half`).

    `config`/`tunables` override upstream's constructor arguments and tunables (a None tunable
    is left out); the network is built from them by the rules the loader applies (`t2s_config`).
    """
    spec_tunables = _merged(T2S_TUNABLES, tunables)
    if legacy:
        spec_tunables.pop("padding_token_offset")
    spec_config = {"depth": depth, "n_head": n_head, **T2S_CONFIG, **(config or {})}
    model = T2S(t2s_config(spec_config, spec_tunables))
    cfg = model.cfg
    randomize(model, seed)
    model.encoder.positional_embedding.copy_(sinusoids(cfg.ttoks_len, cfg.width))  # type: ignore[operator]
    model.embeddings.positional_embedding.copy_(sinusoids(cfg.stoks_len, cfg.width))  # type: ignore[operator]
    state = {
        k: (v.half() if half and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": spec_config, "tunables": spec_tunables, "state_dict": state}, path)
    return path


def write_s2a(
    path: Path,
    depth: int,
    n_head: int,
    seed: int = 1,
    conditioned: bool = False,
    half: bool = False,
    config: dict[str, Any] | None = None,
    tunables: dict[str, Any] | None = None,
) -> Path:
    """An S2A `.model` file (plain or conditioned) in upstream's format with random weights.

    `config`/`tunables` override upstream's constructor arguments and tunables (a None tunable
    is left out); the network is built from them by the rules the loader applies (`s2a_config`).
    """
    spec_tunables = _merged(S2A_TUNABLES, tunables)
    spec_config = {"depth": depth, "n_head": n_head, **S2A_CONFIG, **(config or {})}
    model = S2A(s2a_config(spec_config, spec_tunables, conditioned))
    randomize(model, seed)
    if not model.cfg.rope:  # upstream stores the same sinusoids twice
        table = sinusoids(model.cfg.ctx_n, model.cfg.width)
        model.positional_embeddings.copy_(table)  # type: ignore[operator]
        model.embds.positional_embedding.copy_(table)  # type: ignore[operator]
    state: dict[str, Any] = {
        k: (v.half() if half and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    state["_extra_state"] = {"speaker_map": spec_config["speaker_map"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": spec_config, "tunables": spec_tunables, "state_dict": state}, path)
    return path
