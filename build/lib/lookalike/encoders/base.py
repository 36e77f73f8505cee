"""The encoder interface: images in, L2-normalised vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns RGB images into unit vectors of a fixed size.

    ``model_id`` names the model *and* its preprocessing: vectors are only
    comparable when their model ids are equal, and the catalogue refuses to
    mix them.
    """

    model_id: str
    dim: int
    #: The smallest image side the model needs; decoders may downscale to it.
    decode_size: int

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image to the model's input array (C, H, W), float32."""
        ...

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """A batch of preprocessed arrays (N, C, H, W) to unit vectors (N, dim)."""
        ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def embed_images(encoder: Encoder, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
    """Embed already-decoded images in batches."""
    if not images:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    parts = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([encoder.preprocess(image) for image in images[start : start + batch_size]])
        parts.append(encoder.embed_arrays(batch))
    return np.concatenate(parts)
