"""A tiny real encoder for logic tests: no model to load, a few microseconds a photo.

The photo shrunk to 8x8 colour pixels, centred and L2-normalised: the same photo
gives the same vector and different photos different ones, which is all that
tests of storage, filtering, ranking and bookkeeping need. Tests about retrieval
quality use the real model (the ``encoder`` fixture).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.encoders import l2_normalise

SIDE = 8


class TinyEncoder:
    model_id = f"tiny-{SIDE}x{SIDE}:1"
    dim = 3 * SIDE * SIDE
    decode_size = 32

    def preprocess(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX), np.float32) / 255.0
        return pixels.transpose(2, 0, 1)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        flat = np.asarray(batch, np.float32).reshape(len(batch), -1)
        return l2_normalise(flat - flat.mean(axis=1, keepdims=True))
