"""Encoders: pretrained models that turn photos into comparable vectors."""

from __future__ import annotations

from lookalike.encoders.base import Encoder, embed_images, l2_normalise

DEFAULT_MODEL = "efficientnet-lite0:avg"


def load_encoder(spec: str = DEFAULT_MODEL, threads: int | None = None) -> Encoder:
    """Load an encoder from a spec such as ``efficientnet-lite2:gem``."""
    from lookalike.encoders.onnx_encoder import OnnxEfficientNetLite

    name, _, pooling = spec.partition(":")
    return OnnxEfficientNetLite(name, pooling or "avg", threads=threads)


__all__ = ["DEFAULT_MODEL", "Encoder", "embed_images", "l2_normalise", "load_encoder"]
