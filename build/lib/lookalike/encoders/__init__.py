"""Encoders: pretrained models that turn photos into comparable vectors."""

from __future__ import annotations

import os

from lookalike.encoders.base import Encoder, embed_images, l2_normalise

DEFAULT_MODEL = "efficientnet-lite0:avg:int8"


def load_encoder(spec: str = DEFAULT_MODEL, threads: int | None = None, cache_root: str | os.PathLike | None = None) -> Encoder:
    """Load an encoder from a spec: a built-in model such as ``efficientnet-lite2:gem``
    (see onnx_encoder.ImageModelSpec), ``hf:FOLDER_OR_CACHED_REPO`` for a local CLIP or
    DINOv2 checkpoint, ``python:MODULE:FACTORY`` for your own Encoder, or several
    built-in models joined by ``+`` (their vectors concatenated). Exports are cached under
    ``cache_root`` (Settings.cache_dir)."""
    if spec.startswith("hf:"):
        from lookalike.encoders.hf_encoder import HuggingFaceEncoder

        return HuggingFaceEncoder(spec[3:], threads=threads, cache_root=cache_root)
    if spec.startswith("python:"):
        return _load_python_encoder(spec[len("python:"):])
    if "+" in spec:
        from lookalike.encoders.concat import ConcatEncoder

        return ConcatEncoder([load_encoder(part, threads, cache_root) for part in spec.split("+")])
    from lookalike.encoders.onnx_encoder import OnnxImageEncoder

    return OnnxImageEncoder(spec, threads=threads, cache_root=cache_root)


def _load_python_encoder(target: str) -> Encoder:
    """``module:factory``: a callable returning an object with the Encoder interface
    (model_id, dim, decode_size, preprocess, embed_arrays), the way imagededup takes a custom model."""
    import importlib

    module_name, _, factory_name = target.partition(":")
    if not module_name or not factory_name:
        raise ValueError(f"python:{target}: expected python:MODULE:FACTORY")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"python:{target}: {error}") from None
    encoder = factory()
    missing = [name for name in ("model_id", "dim", "decode_size", "preprocess", "embed_arrays") if not hasattr(encoder, name)]
    if missing:
        raise ValueError(f"python:{target}: the encoder lacks {', '.join(missing)}")
    return encoder


__all__ = ["DEFAULT_MODEL", "Encoder", "embed_images", "l2_normalise", "load_encoder"]
