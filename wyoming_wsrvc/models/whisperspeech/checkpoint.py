"""Read WhisperSpeech `.model` checkpoints (dict of `config`, `tunables`, `state_dict`).

Loaded with `weights_only=True` (no code runs), validated with strict key checks, fp16 or fp32
values copied into the requested dtype. Old checkpoints get upstream's `Tunables.upgrade`
defaults for the keys they lack.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .s2a import S2A, S2AConfig
from .t2s import T2S, T2SConfig

_LOGGER = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A file is not a WhisperSpeech checkpoint this code supports; the message says why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


def read(path: Path | str) -> dict[str, Any]:
    try:
        spec = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except Exception as err:  # unpickling refuses code, truncation, foreign formats
        raise CheckpointError(
            path, f"not a loadable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(spec, dict) or not {"config", "state_dict"} <= set(spec):
        raise CheckpointError(
            path, "missing 'config'/'state_dict': not a WhisperSpeech .model file"
        )
    return spec


def kind(state_dict: dict[str, Any]) -> str:
    """`t2s`, `s2a` or `s2a-cond`, from the state-dict keys."""
    if "lang_embeddings.weight" in state_dict and "encoder.embedding.main.weight" in state_dict:
        return "t2s"
    if "semantic_embedding.weight" in state_dict:
        if any(k.startswith("cond_embeddings.") for k in state_dict):
            return "s2a-cond"
        return "s2a"
    return "unknown"


def _load_strict(path: Path | str, model: nn.Module, state_dict: dict[str, Any]) -> None:
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {sorted(missing)[:5]}")
        if unexpected:
            detail.append(f"unexpected {sorted(unexpected)[:5]}")
        raise CheckpointError(path, "unsupported layout: " + "; ".join(detail))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(path, f"shape mismatch: {err}".splitlines()[0]) from err


def t2s_config(config: dict[str, Any], tunables: dict[str, Any]) -> T2SConfig:
    return T2SConfig(
        depth=int(config["depth"]),
        n_head=int(config["n_head"]),
        head_width=int(config.get("head_width", 64)),
        ffn_mult=int(config.get("ffn_mult", 4)),
        ttoks_len=int(config.get("ttoks_len", 550)),
        ttoks_codes=int(config.get("ttoks_codes", 256)),
        stoks_len=int(config.get("stoks_len", 750)),
        stoks_codes=int(config.get("stoks_codes", 513)),
        stoks_width=config.get("stoks_width"),
        ttoks_width=config.get("ttoks_width"),
        output_mult=float(tunables.get("output_mult", 0.35)),
        query_mult=float(tunables.get("query_mult", 1.0)),
        encoder_depth_ratio=float(tunables.get("encoder_depth_ratio", 0.25)),
        causal_encoder=bool(tunables.get("causal_encoder", True)),
        cps_bins=int(tunables.get("cps_bins", 32)),
        # Upstream's Tunables.upgrade: checkpoints without the key use the pad code (-1).
        padding_token_offset=int(tunables.get("padding_token_offset", -1)),
    )


def s2a_config(config: dict[str, Any], tunables: dict[str, Any], conditioned: bool) -> S2AConfig:
    return S2AConfig(
        depth=int(config["depth"]),
        n_head=int(config["n_head"]),
        head_width=int(config.get("head_width", 64)),
        ffn_mult=int(config.get("ffn_mult", 4)),
        ctx_n=int(config.get("ctx_n", 2250)),
        stoks_len=int(config.get("stoks_len", 750)),
        stoks_codes=int(config.get("stoks_codes", 513)),
        stoks_width=config.get("stoks_width"),
        spk_width=config.get("spk_width"),
        atoks_width=config.get("atoks_width"),
        quantizers=int(config.get("quantizers", 4)),
        output_mult=float(tunables.get("output_mult", 5.6)),
        query_mult=float(tunables.get("query_mult", 0.3)),
        encoder_depth_ratio=float(tunables.get("encoder_depth_ratio", 0.25)),
        causal_encoder=bool(tunables.get("causal_encoder", False)),
        # Upstream's Tunables.upgrade default for old checkpoints is True.
        hidden_to_emb=bool(
            tunables.get("causal_encoder", False) or tunables.get("force_hidden_to_emb", True)
        ),
        conditioned=conditioned,
        # Upstream's Tunables.upgrade default for checkpoints without the key is False.
        rope=bool(tunables.get("rope", False)),
    )


def t2s_from_spec(path: Path | str, spec: dict[str, Any]) -> T2S:
    """Build and strictly load a T2S from a checkpoint dict (on the current default device)."""
    if kind(spec["state_dict"]) != "t2s":
        raise CheckpointError(path, "not a T2S checkpoint")
    tunables = spec.get("tunables") or {}
    if not tunables.get("cps_input", True):
        raise CheckpointError(
            path,
            "cps_input=False: upstream's decoder adds a speaking-rate embedding such a model "
            "lacks, so no such model can be trained or run; refused",
        )
    model = T2S(t2s_config(spec["config"], tunables))
    _load_strict(path, model, spec["state_dict"])
    return model


def s2a_from_spec(path: Path | str, spec: dict[str, Any]) -> S2A:
    """Build and strictly load an S2A (plain or conditioned) from a checkpoint dict."""
    found = kind(spec["state_dict"])
    if found not in ("s2a", "s2a-cond"):
        raise CheckpointError(path, "not an S2A checkpoint")
    cfg = s2a_config(spec["config"], spec.get("tunables") or {}, conditioned=found == "s2a-cond")
    if cfg.stoks_len == 1500:
        raise CheckpointError(
            path,
            "stoks_len 1500 (50 Hz semantic tokens): upstream interleaves them to 2250 encoder "
            "positions whose cross-attention keys (positions x3) run past its 2500-position RoPE "
            "table, so it cannot run this model; refused",
        )
    if not cfg.rope and cfg.stoks_len != cfg.ctx_n:
        raise CheckpointError(
            path,
            f"rope=False with stoks_len {cfg.stoks_len} != ctx_n {cfg.ctx_n}: upstream adds "
            f"{cfg.ctx_n} sinusoid positions to {cfg.stoks_len} encoder inputs and fails; refused",
        )
    model = S2A(cfg)
    _load_strict(path, model, spec["state_dict"])
    return model


def load_t2s(
    path: Path | str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    int8: bool = False,
) -> T2S:
    """Read a T2S `.model` file; values (fp16 or fp32) end up in `dtype` on `device`, the
    decoder's weights in int8 with `int8` (CPU, float32 activations)."""
    model = t2s_from_spec(path, read(path)).eval().to(device=device, dtype=dtype)
    model.prepare(int8)
    return model


def load_s2a(
    path: Path | str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    int8: bool = False,
) -> S2A:
    """Read an S2A `.model` file; values (fp16 or fp32) end up in `dtype` on `device`, the
    decoder's and output tables' weights in int8 with `int8` (CPU, float32 activations)."""
    model = s2a_from_spec(path, read(path)).eval().to(device=device, dtype=dtype)
    model.prepare(int8)
    return model
