"""Several models side by side: ``efficientnet-lite0:avg:int8+mobilenetv2:avg``.

Each model's unit vector is kept, the concatenation divided by sqrt(models), so
the cosine of two concatenated vectors is the mean of the models' cosines. The
photo is resized and cropped once; each model gets its own pixel scaling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.encoders.base import l2_normalise


class ConcatEncoder:
    def __init__(self, encoders: list):
        first = encoders[0]
        for other in encoders[1:]:
            if (other.image_size, other.resize_size) != (first.image_size, first.resize_size):
                raise ValueError(f"cannot concatenate {first.model_id} and {other.model_id}: they need different input "
                                 f"sizes ({first.image_size} and {other.image_size} px); give them the same, e.g. :224")
        self.encoders = encoders
        self.model_id = "+".join(encoder.model_id for encoder in encoders)
        self.dim = sum(encoder.dim for encoder in encoders)
        self.decode_size = max(encoder.decode_size for encoder in encoders)
        self.image_size = first.image_size
        self.resize_size = first.resize_size

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.encoders[0].preprocess(image)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        first = self.encoders[0]
        pixels = (np.asarray(batch, np.float32) - _channels(first._offset)) / _channels(first._scale)  # back to 0..255
        parts = [first.embed_arrays(batch)]
        for encoder in self.encoders[1:]:
            parts.append(encoder.embed_arrays(pixels * _channels(encoder._scale) + _channels(encoder._offset)))
        return l2_normalise(np.concatenate(parts, axis=1))


def _channels(per_channel: np.ndarray) -> np.ndarray:
    """(1, 1, 3) scaling of HWC pixels as (1, 3, 1, 1) for NCHW batches."""
    return np.asarray(per_channel, np.float32).reshape(1, 3, 1, 1)
