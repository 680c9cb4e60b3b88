"""Speaker embeddings for S2A: upstream's default speaker, files, and (optional) cloning.

An embedding is 192 floats (SpeechBrain ECAPA `spkrec-ecapa-voxceleb`, as upstream). Cloning
from a recording needs SpeechBrain, an optional extra used once by `devtools clone-speaker`; the
result is saved as `.npy` beside the profile, so the server never needs SpeechBrain.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

_LOGGER = logging.getLogger(__name__)

SPEAKER_DIM = 192

# The default speaker hard-coded in upstream's `Pipeline` (whisperspeech/pipeline.py).
DEFAULT_SPEAKER = (
    "-0.2929 -0.4503 0.4155 -0.1417 0.0473 -0.1624 -0.2322 0.7071 0.4800 0.5496 0.0410 0.6236 "
    "0.4729 0.0587 0.2194 -0.0466 -0.3036 0.0497 0.5028 -0.1703 0.5039 -0.6464 0.3857 -0.7350 "
    "-0.1605 0.4808 0.5397 -0.4851 0.1774 -0.8712 0.5789 0.1785 -0.1417 0.3039 0.4232 -0.0186 "
    "0.2685 0.6153 -0.3103 -0.5706 -0.4494 0.3394 -0.6184 -0.3617 1.1041 -0.1178 -0.1885 0.1997 "
    "0.5571 -0.2906 -0.0477 -0.4048 -0.1062 1.4779 0.1639 -0.3712 -0.1776 -0.0568 -0.6162 0.0110 "
    "-0.0207 -0.1319 -0.3854 0.7248 0.0343 0.5724 0.0670 0.0486 -0.3813 0.1738 0.3017 1.0502 "
    "0.1550 0.5708 0.0366 0.5093 0.0294 -0.7091 -0.8220 -0.1583 -0.2343 0.1366 0.7372 -0.0631 "
    "0.1505 0.4600 -0.1252 -0.5245 0.7523 -0.0386 -0.2587 1.0066 -0.2037 0.1617 -0.3800 0.2790 "
    "0.0184 -0.5111 -0.7291 0.1627 0.2367 -0.0192 0.4822 -0.4458 0.1457 -0.5884 0.1909 0.2563 "
    "-0.2035 -0.0377 0.7771 0.2139 0.3801 0.6047 -0.6043 -0.2563 -0.0726 0.3856 0.3217 0.0823 "
    "-0.1302 0.3287 0.5693 0.2453 0.8231 0.0072 1.0327 0.6065 -0.0620 -0.5572 0.5220 0.2485 "
    "0.1520 0.0222 -0.2179 -0.7392 -0.3855 0.1822 0.1042 0.7133 0.3583 0.0606 -0.0424 -0.9189 "
    "-0.4882 -0.5480 -0.5719 -0.1660 -0.3439 -0.5814 -0.2542 0.0197 0.4942 0.0915 -0.0420 -0.0035 "
    "0.5578 0.1051 -0.0891 0.2348 0.6876 -0.6685 0.8215 -0.3692 -0.3150 -0.0462 -0.6806 -0.2661 "
    "-0.0308 -0.0050 0.6756 -0.1647 1.0734 0.0049 0.4969 0.0259 -0.8949 0.0731 0.0886 0.3442 "
    "-0.1433 -0.6804 0.2204 0.1859 0.2702 0.1699 -0.1443 -0.9614 0.3261 0.1718 0.3545 -0.0686"
)


class SpeakerError(ValueError):
    """A speaker embedding file is unusable; the message names the file."""


def default_speaker() -> torch.Tensor:
    """Upstream's default speaker: (192,) float32."""
    return torch.tensor([float(v) for v in DEFAULT_SPEAKER.split()], dtype=torch.float32)


def load_speaker(path: Path) -> torch.Tensor:
    """A (192,) embedding from `.npy` or `.pt` (a tensor, loaded with weights_only=True)."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(loaded, torch.Tensor):
                raise SpeakerError(f"{path}: expected a tensor, got {type(loaded).__name__}")
            tensor = loaded.float()
    except (OSError, ValueError, RuntimeError) as err:
        raise SpeakerError(f"{path}: cannot read speaker embedding: {err}") from err
    tensor = tensor.reshape(-1)
    if tensor.numel() != SPEAKER_DIM or not bool(torch.isfinite(tensor).all()):
        raise SpeakerError(f"{path}: expected {SPEAKER_DIM} finite floats, got {tensor.numel()}")
    return tensor


def clone_speaker(recording: Path, output: Path, cache_dir: Path) -> torch.Tensor:
    """Compute the ECAPA embedding of the first 30 s of `recording` and save it to `output`.

    Needs the optional `clone` extra (SpeechBrain); it downloads `spkrec-ecapa-voxceleb` once
    into `cache_dir`.
    """
    try:
        from speechbrain.inference.speaker import EncoderClassifier
    except ImportError as err:
        raise SpeakerError("cloning needs SpeechBrain: pip install 'wyoming-wsrvc[clone]'") from err
    import soundfile

    from ...audio import Audio, resample

    samples, rate = soundfile.read(str(recording), dtype="float32", always_2d=True)
    mono = Audio(np.ascontiguousarray(samples[: rate * 30].mean(axis=1)), int(rate))
    audio = resample(mono, 16000)
    encoder = EncoderClassifier.from_hparams(
        "speechbrain/spkrec-ecapa-voxceleb", savedir=str(cache_dir / "spkrec-ecapa-voxceleb")
    )
    embedding = encoder.encode_batch(torch.from_numpy(audio.samples)[None])[0, 0].float()
    np.save(output, embedding.numpy())
    _LOGGER.info("Saved the speaker embedding of %s to %s", recording, output)
    result: torch.Tensor = embedding
    return result
