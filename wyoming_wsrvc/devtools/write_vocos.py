"""A Vocos vocoder folder with random weights, as `charactr/vocos-encodec-24khz` ships it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml


@dataclass(frozen=True)
class VocosSize:
    dim: int
    intermediate_dim: int
    num_layers: int


VOCOS_REAL = VocosSize(384, 1152, 8)
VOCOS_TINY = VocosSize(32, 64, 1)


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
    # their default initialisation, made reproducible without touching the global generator
    with torch.random.fork_rng():
        torch.manual_seed(seed)
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
