"""Feature retrieval: a voice's faiss index of training features, loaded once per voice.

For each 50 Hz content frame the 8 nearest training features are found; they are weighted by
1 / distance² (faiss returns squared L2 distances, as upstream uses them) and blended into the
frame with `index_rate`. faiss reads the index from the file only (nothing executes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

_LOGGER = logging.getLogger(__name__)

NEIGHBOURS = 8


class IndexFileError(ValueError):
    """The index file is unusable; the message names the file and the reason."""


class FeatureIndex:
    def __init__(self, index: Any, vectors: np.ndarray, path: Path) -> None:
        self.index = index
        self.vectors = vectors
        self.path = path

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, path: Path) -> FeatureIndex:
        try:
            import faiss
        except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
            raise IndexFileError(f"{path}: faiss is not installed") from err
        if not path.is_file():
            raise IndexFileError(f"{path}: file not found")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise IndexFileError(
                f"{path}: not a faiss index ({str(err).splitlines()[0][:120]})"
            ) from err
        if index.ntotal < 1:
            raise IndexFileError(
                f"{path}: the index holds no vectors (a 'trained_' file? use 'added_')"
            )
        try:
            vectors = index.reconstruct_n(0, index.ntotal)
        except RuntimeError as err:
            raise IndexFileError(f"{path}: cannot read its vectors ({err})") from err
        _LOGGER.debug("Loaded index %s: %d vectors of %d dims", path, index.ntotal, index.d)
        return cls(index, np.ascontiguousarray(vectors, dtype=np.float32), path)

    def blend(self, features: Tensor, rate: float) -> Tensor:
        """features (1, frames, dim) → the same with `rate` of each frame taken from the index."""
        if rate <= 0 or features.shape[1] == 0:
            return features
        query = features[0].detach().float().cpu().numpy()
        k = min(NEIGHBOURS, self.index.ntotal)
        score, ids = self.index.search(np.ascontiguousarray(query), k)
        weight = np.square(1 / np.maximum(score, 1e-8))
        weight /= weight.sum(axis=1, keepdims=True)
        retrieved = np.sum(self.vectors[ids] * weight[:, :, None], axis=1)
        mixed = torch.from_numpy(retrieved).to(features)[None]
        return rate * mixed + (1 - rate) * features
