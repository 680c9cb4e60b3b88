"""Random-weight model files in the real formats, for tests, benchmarks and trying the server
offline: WhisperSpeech `.model` T2S/S2A, Vocos `config.yaml` + `pytorch_model.bin`, HuBERT (HF layout),
RMVPE, RVC `.pth` voices (classic WebUI and Applio formats, every decoder) and a faiss index,
plus voice profiles.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .registry import VOCOS_LOCAL_DIR
from .whisperspeech.s2a import S2A
from .whisperspeech.t2s import T2S

_LOGGER = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class VocosSize:
    dim: int
    intermediate_dim: int
    num_layers: int


VOCOS_REAL = VocosSize(384, 1152, 8)
VOCOS_TINY = VocosSize(32, 64, 1)


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper-style [sin | cos] positions (what upstream stores in its buffers)."""
    increment = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.02, generator=generator)
            elif param.dim() >= 2:
                param.normal_(0, 1 / math.sqrt(param.shape[-1]), generator=generator)
            else:
                param.normal_(1.0, 0.05, generator=generator)


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
    from .whisperspeech.checkpoint import t2s_config

    spec_tunables = _merged(T2S_TUNABLES, tunables)
    if legacy:
        spec_tunables.pop("padding_token_offset")
    spec_config = {"depth": depth, "n_head": n_head, **T2S_CONFIG, **(config or {})}
    model = T2S(t2s_config(spec_config, spec_tunables))
    cfg = model.cfg
    _randomize(model, seed)
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
    from .whisperspeech.checkpoint import s2a_config

    spec_tunables = _merged(S2A_TUNABLES, tunables)
    spec_config = {"depth": depth, "n_head": n_head, **S2A_CONFIG, **(config or {})}
    model = S2A(s2a_config(spec_config, spec_tunables, conditioned))
    _randomize(model, seed)
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


def write_vocos(folder: Path, size: VocosSize, seed: int = 2, with_encodec: bool = False) -> Path:
    """`config.yaml` + `pytorch_model.bin` as in `charactr/vocos-encodec-24khz`."""
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    folder.mkdir(parents=True, exist_ok=True)
    backbone_args = {
        "input_channels": 128,
        "dim": size.dim,
        "intermediate_dim": size.intermediate_dim,
        "num_layers": size.num_layers,
        "adanorm_num_embeddings": 4,
    }
    head_args = {"dim": size.dim, "n_fft": 1280, "hop_length": 320, "padding": "same"}
    config = {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.EncodecFeatures",
            "init_args": {
                "encodec_model": "encodec_24khz",
                "bandwidths": [1.5, 3.0, 6.0, 12.0],
                "train_codebooks": False,
            },
        },
        "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": backbone_args},
        "head": {"class_path": "vocos.heads.ISTFTHead", "init_args": head_args},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    backbone, head = VocosBackbone(**backbone_args), ISTFTHead(**head_args)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.out.weight.normal_(0, 0.01, generator=generator)
    state: dict[str, torch.Tensor] = {
        "feature_extractor.codebook_weights": torch.randn(16 * 1024, 128, generator=generator)
    }
    if with_encodec:
        from encodec.model import EncodecModel

        encodec = EncodecModel.encodec_model_24khz(pretrained=False)
        state.update({f"feature_extractor.encodec.{k}": v for k, v in encodec.state_dict().items()})
    state.update({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    torch.save(state, folder / "pytorch_model.bin")
    return folder


RVC_TINY = {
    "inter": 16,
    "hidden": 16,
    "filter": 32,
    "heads": 2,
    "layers": 2,
    "up_ch": 32,
    "speakers": 3,
    "gin": 16,
}
RVC_REAL = {
    "inter": 192,
    "hidden": 192,
    "filter": 768,
    "heads": 2,
    "layers": 6,
    "up_ch": 512,
    "speakers": 109,
    "gin": 256,
}
RVC_GEOMETRY = {  # (sample rate, version) -> (upsample rates, upsample kernel sizes)
    (24000, "v2"): ([10, 6, 2, 2], [20, 12, 4, 4]),
    (32000, "v2"): ([10, 8, 2, 2], [20, 16, 4, 4]),
    (40000, "v2"): ([10, 10, 2, 2], [16, 16, 4, 4]),
    (48000, "v2"): ([12, 10, 2, 2], [24, 20, 4, 4]),
    (32000, "v1"): ([10, 4, 2, 2, 2], [16, 16, 4, 4, 4]),
    (40000, "v1"): ([10, 10, 2, 2], [16, 16, 4, 4]),
    (48000, "v1"): ([10, 6, 2, 2, 2], [16, 16, 4, 4, 4]),
}
# Weight-normed layers (stored as weight_g/weight_v), per decoder; the flow's are always.
_FLOW_NORMED = (".enc.in_layers.", ".enc.res_skip_layers.", ".enc.cond_layer.")
_DECODER_NORMED = {
    "HiFi-GAN": ("dec.ups.", "dec.resblocks."),
    "MRF HiFi-GAN": ("dec.conv_pre.", "dec.upsamples.", "dec.mrfs.", "dec.conv_post."),
    "RefineGAN": (
        "dec.pre_conv.",
        "dec.downsample_blocks.",
        "dec.mel_conv.",
        ".convs1.",
        ".convs2.",
        "dec.conv_post.",
    ),
}


def write_rvc_voice(
    path: Path,
    version: str,
    rate: int,
    f0: bool = True,
    size: str = "tiny",
    seed: int = 5,
    vocoder: str | None = None,
    layout: str = "3.3+",
    embedder: str = "contentvec",
) -> Path:
    """An RVC voice `.pth`: fp16 `weight` with weight_g/weight_v and the 18-entry config.

    `vocoder=None` writes the classic WebUI format (`sr` "40k", `f0` int, `info`); a vocoder name
    ("HiFi-GAN", "MRF HiFi-GAN", "RefineGAN" with `layout` "3.3+" or "3.2.9") writes Applio's
    (`sr` an int, `f0` a bool, no `info`, Applio's extra keys and `vocoder`).
    """
    from .rvc.refinegan import Layout
    from .rvc.synthesizer import HIFIGAN, REFINEGAN, Synthesizer, SynthesizerConfig

    dims = RVC_TINY if size == "tiny" else RVC_REAL
    gin = 256 if vocoder == REFINEGAN else dims["gin"]  # RefineGAN's conditioning is fixed
    ups, kernels = RVC_GEOMETRY[(rate, version)]
    config = [
        {24000: 641, 32000: 513}.get(rate, 1025),
        32,
        dims["inter"],
        dims["hidden"],
        dims["filter"],
        dims["heads"],
        dims["layers"],
        3,
        0,
        "1",
        [3, 7, 11],
        [[1, 3, 5]] * 3,
        ups,
        dims["up_ch"],
        kernels,
        dims["speakers"],
        gin,
        rate,
    ]
    cfg = SynthesizerConfig(
        inter_channels=dims["inter"],
        hidden_channels=dims["hidden"],
        filter_channels=dims["filter"],
        n_heads=dims["heads"],
        n_layers=dims["layers"],
        kernel_size=3,
        resblock="1",
        resblock_kernel_sizes=(3, 7, 11),
        resblock_dilation_sizes=((1, 3, 5),) * 3,
        upsample_rates=tuple(ups),
        upsample_initial_channel=dims["up_ch"],
        upsample_kernel_sizes=tuple(kernels),
        n_speakers=dims["speakers"],
        gin_channels=gin,
        rate=rate,
        feature_dim=256 if version == "v1" else 768,
        f0=f0,
        vocoder=vocoder or HIFIGAN,
        refinegan_layout=Layout(layout),
    )
    model = Synthesizer(cfg)
    _randomize(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # keep the prior's log-scale small, as in trained voices
        model.enc_p.proj.weight.mul_(0.02)
        if cfg.vocoder != HIFIGAN:  # deep decoders: unit-gain convs, small noise weights
            for param in model.dec.parameters():
                if param.dim() >= 2:
                    param.normal_(0, 1 / math.sqrt(param[0].numel()), generator=generator)
                else:
                    param.fill_(1e-3)
    normed = _FLOW_NORMED + _DECODER_NORMED[cfg.vocoder]
    weight: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith(".weight") and any(part in key for part in normed):
            stem = key[: -len(".weight")]
            norm = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            weight[stem + ".weight_g"] = norm.half()
            weight[stem + ".weight_v"] = value.half()
        else:
            weight[key] = value.half()
    data: dict[str, Any] = {"weight": weight, "config": config}
    if vocoder is None:
        data.update(info="random weights", sr=f"{rate // 1000}k", f0=int(f0), version=version)
    else:
        data.update(
            epoch=1,
            step=1,
            sr=rate,
            f0=f0,
            version=version,
            creation_date="2026-01-01T00:00:00",
            model_hash="0" * 64,
            dataset_length=1,
            model_name=path.stem,
            author=None,
            embedder_model=embedder,
            speakers_id=dims["speakers"],
            vocoder=vocoder,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def write_index(path: Path, dim: int, vectors: int = 400, seed: int = 6) -> Path:
    """A faiss `IVF{n},Flat` index of random training features, as RVC's training writes it."""
    import faiss

    data = np.random.default_rng(seed).normal(size=(vectors, dim)).astype(np.float32)
    n_ivf = max(1, min(int(16 * np.sqrt(vectors)), vectors // 39))
    index = faiss.index_factory(dim, f"IVF{n_ivf},Flat")
    index.train(data)
    index.add(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    return path


def write_hubert(folder: Path, size: str = "tiny", seed: int = 7, final_proj: bool = True) -> Path:
    """HuBERT base in the Hugging Face layout (`config.json` + `pytorch_model.bin`), with RVC's
    final_proj (as `hubert_base`) or without (as some of Applio's embedders)."""
    import json

    from .rvc.content import Hubert, HubertConfig

    cfg = HubertConfig() if size == "real" else HubertConfig(layers=2, intermediate=64, conv_dim=64)
    model = Hubert(cfg, final_proj=final_proj)
    _randomize(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "hubert",
                "hidden_size": cfg.hidden,
                "num_hidden_layers": cfg.layers,
                "num_attention_heads": cfg.heads,
                "intermediate_size": cfg.intermediate,
                "conv_dim": [cfg.conv_dim] * 7,
                "conv_kernel": list(cfg.conv_kernels),
                "conv_stride": list(cfg.conv_strides),
                "num_conv_pos_embeddings": cfg.pos_kernel,
                "num_conv_pos_embedding_groups": cfg.pos_groups,
                "classifier_proj_size": cfg.proj_dim,
                "feat_extract_norm": "group",
                "do_stable_layer_norm": False,
            },
            indent=1,
        )
    )
    state = {}
    for key, value in model.state_dict().items():
        if key == "encoder.pos_conv_embed.conv.weight":
            norm = value.norm(dim=(0, 1), keepdim=True)
            state["encoder.pos_conv_embed.conv.weight_g"] = norm.half()
            state["encoder.pos_conv_embed.conv.weight_v"] = value.half()
        else:
            state[key] = value.half()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def write_rmvpe(path: Path, size: str = "tiny", seed: int = 8) -> Path:
    """An RMVPE state dict (`E2E(4, 1, (2, 2))` for real, a narrow variant for tiny)."""
    from .rvc.rmvpe import E2E, RmvpeShape

    shape = (
        RmvpeShape()
        if size == "real"
        else RmvpeShape(n_blocks=1, inter_layers=1, en_out_channels=4)
    )
    model = E2E(shape)
    _randomize(model, seed)
    state = {
        k: (v.half() if v.is_floating_point() and "running" not in k else v)
        for k, v in model.state_dict().items()
    }
    for key in state:
        if key.endswith("running_var"):
            state[key] = torch.ones_like(state[key])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


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
