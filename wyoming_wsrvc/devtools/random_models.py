"""Random-weight model files in the real formats, for tests, benchmarks and trying the server
offline: WhisperSpeech `.model` T2S/S2A, Vocos `config.yaml` + `pytorch_model.bin`, HuBERT (HF layout),
RMVPE, RVC `.pth` voices (classic WebUI and Applio formats, every decoder) and a faiss index,
plus voice profiles.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config.registry import VOCOS_LOCAL_DIR
from .write_rvc import write_hubert, write_index, write_rmvpe, write_rvc_voice
from .write_vocos import VOCOS_REAL, VOCOS_TINY, write_vocos
from .write_whisperspeech import SIZES, write_s2a, write_t2s

_LOGGER = logging.getLogger(__name__)


def _profile(name: str, description: str, t2s: str, s2a: str, **extra: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "name": name,
        "description": description,
        "languages": ["en", "en_US"],
        "attribution": {"name": "random weights (test set)", "url": "http://127.0.0.1/"},
        "sentence_pause": 0.1,
        "tail_silence": 0.1,
        "whisperspeech": {"t2s": t2s, "s2a": s2a, "speaking_rate": 13.0, **extra},
    }
    return profile


INDEX_NAME = "added_IVF20_Flat_nprobe_1_rvc-v2-40k_v2.index"


# Applio voices of the random sets: (profile name, vocoder, RefineGAN layout, rate, embedder).
APPLIO_VOICES = {
    "tiny": (
        ("applio-hifigan-24k", "HiFi-GAN", "3.3+", 24000, "contentvec"),
        ("applio-mrf-24k", "MRF HiFi-GAN", "3.3+", 24000, "japanese-hubert-base"),
        ("applio-refinegan-32k", "RefineGAN", "3.3+", 32000, "contentvec"),
        ("applio-refinegan-3.2.9-32k", "RefineGAN", "3.2.9", 32000, "contentvec"),
    ),
    "real": (
        ("applio-mrf-32k", "MRF HiFi-GAN", "3.3+", 32000, "contentvec"),
        ("applio-refinegan-32k", "RefineGAN", "3.3+", 32000, "contentvec"),
    ),
}


def _random_rvc(folder: Path, size: str, t2s: str, s2a: str) -> list[Path]:
    """Shared content and pitch models, a v2 40 kHz voice with an index, a v1 48 kHz voice,
    and Applio voices (MRF HiFi-GAN, RefineGAN)."""
    models, voices = folder / "models", folder / "voices"
    write_hubert(folder / "hubert_base", size)
    write_rmvpe(folder / "rmvpe.pt", size)
    write_rvc_voice(models / "rvc-v2-40k.pth", "v2", 40000, size=size)
    write_index(models / INDEX_NAME, 768)
    write_rvc_voice(models / "rvc-v1-48k.pth", "v1", 48000, size=size, seed=9)
    settings: dict[str, dict[str, Any]] = {
        "rvc-v2": {
            "model": "../models/rvc-v2-40k.pth",
            "index": f"../models/{INDEX_NAME}",
            "pitch_shift": 2,
            "f0_method": "rmvpe",
            "index_rate": 0.75,
        },
        "rvc-v1": {"model": "../models/rvc-v1-48k.pth", "f0_method": "yin", "pitch_shift": -3},
    }
    for i, (name, vocoder, layout, rate, embedder) in enumerate(APPLIO_VOICES[size]):
        write_rvc_voice(
            models / f"{name}.pth",
            "v2",
            rate,
            size=size,
            seed=11 + i,
            vocoder=vocoder,
            layout=layout,
            embedder=embedder,
        )
        if embedder != "contentvec" and not (folder / "embedders" / embedder).is_dir():
            write_hubert(folder / "embedders" / embedder, size, seed=12 + i, final_proj=False)
        settings[name] = {"model": f"../models/{name}.pth", "f0_method": "rmvpe"}
    written = []
    for name, rvc in settings.items():
        profile = _profile(
            name,
            f"{name} ({size} random weights)",
            f"../models/{t2s}.model",
            f"../models/{s2a}.model",
        )
        profile["rvc"] = rvc
        if name == "rvc-v1":
            profile["output_rate"] = 22050
        path = voices / f"{name}.yaml"
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        written.append(path)
    return written


def random_models(folder: Path, size: str = "tiny") -> list[Path]:
    """Write the random model set; returns the written voice profiles."""
    models, voices = folder / "models", folder / "voices"
    voices.mkdir(parents=True, exist_ok=True)
    if size == "tiny":
        write_t2s(models / "t2s-tiny.model", 2, 2)
        write_s2a(models / "s2a-tiny.model", 2, 2)
        write_s2a(models / "s2a-cond-tiny.model", 2, 2, seed=3, conditioned=True, half=True)
        write_vocos(folder / VOCOS_LOCAL_DIR, VOCOS_TINY)
        pairs = {"random": ("t2s-tiny", "s2a-tiny"), "random-cond": ("t2s-tiny", "s2a-cond-tiny")}
    else:
        for name in ("tiny", "base"):
            write_t2s(models / f"t2s-{name}.model", *SIZES[name])
            write_s2a(models / f"s2a-{name}.model", *SIZES[name])
        write_vocos(folder / VOCOS_LOCAL_DIR, VOCOS_REAL, with_encodec=True)
        # The `fast` preset's architecture: base T2S + tiny S2A.
        pairs = {
            "random-fast": ("t2s-base", "s2a-tiny"),
            "random-base": ("t2s-base", "s2a-base"),
            "random-tiny": ("t2s-tiny", "s2a-tiny"),  # the `tiny` preset's architecture
        }
    np.save(
        voices / "speaker-random.npy", np.random.default_rng(4).normal(size=192).astype(np.float32)
    )
    written = []
    for i, (name, (t2s, s2a)) in enumerate(pairs.items()):
        extra = {"speaker": "speaker-random.npy"} if i else {}
        profile = _profile(
            name,
            f"{name} ({size} random weights)",
            f"../models/{t2s}.model",
            f"../models/{s2a}.model",
            **extra,
        )
        path = voices / f"{name}.yaml"
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        written.append(path)
    written += _random_rvc(folder, size, *next(iter(pairs.values())))
    _LOGGER.info("Wrote a %s random model set to %s", size, folder)
    return written
