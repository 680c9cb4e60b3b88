"""RVC files with random weights, in the real formats: a voice `.pth` (the WebUI's or
Applio's), a HuBERT content model, an RMVPE pitch model (tests, benchmark, `random-models`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.rvc.content import Hubert, HubertConfig
from ..models.rvc.refinegan import Layout
from ..models.rvc.rmvpe import E2E, RmvpeShape
from ..models.rvc.synthesizer import (
    SynthesizerConfig,
)
from .random_weights import randomize

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
    from ..models.rvc.synthesizer import HIFIGAN, REFINEGAN, Synthesizer

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
    randomize(model, seed)
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


def write_hubert(folder: Path, size: str = "tiny", seed: int = 7, final_proj: bool = True) -> Path:
    """HuBERT base in the Hugging Face layout (`config.json` + `pytorch_model.bin`), with RVC's
    final_proj (as `hubert_base`) or without (as some of Applio's embedders)."""
    cfg = HubertConfig() if size == "real" else HubertConfig(layers=2, intermediate=64, conv_dim=64)
    model = Hubert(cfg, final_proj=final_proj)
    randomize(model, seed)
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
    shape = (
        RmvpeShape()
        if size == "real"
        else RmvpeShape(n_blocks=1, inter_layers=1, en_out_channels=4)
    )
    model = E2E(shape)
    randomize(model, seed)
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
