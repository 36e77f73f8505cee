"""Photos (and text) to vectors: the encoder, loaded on first use, and the views of a query."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.encoders import DEFAULT_MODEL, Encoder, load_encoder
from lookalike.encoders.views import QUERY_MODES, view_boxes
from lookalike.errors import LookalikeError
from lookalike.images import DecodeLimits, decode_image
from lookalike.store import Catalog

BATCH_SIZE = 32
ImageInput = str | os.PathLike | bytes | Image.Image


def describe(query: ImageInput) -> str:
    if isinstance(query, (str, os.PathLike)):
        return str(query)
    if isinstance(query, Image.Image):
        return "<image>"
    return "<upload>"


def _load(spec: str, settings: Settings) -> Encoder:
    try:
        return load_encoder(spec, cache_root=settings.cache_dir)
    except (ValueError, ImportError) as error:
        raise LookalikeError(str(error)) from None


def prepare_model(settings: Settings) -> dict:
    """Build (and quantise) the model's ONNX graph into the cache now, ahead of the first index or search: a
    container image or a Ray worker then starts with it ready. Returns the model, its cache folder and the seconds
    it took (a fraction of a second when it was there already). The model is the one asked for, else the
    catalogue's (when there is one), else the default."""
    spec = settings.model
    if spec is None and (settings.store or (settings.catalog / "catalog.sqlite").exists()):
        catalog = Catalog(settings.catalog, create=False, store=settings.store)
        try:
            spec = Embedder(settings, catalog).stored_spec()
        finally:
            catalog.close()
    spec = spec or DEFAULT_MODEL
    started = time.perf_counter()
    encoder = _load(spec, settings)
    return {"model": spec, "model_id": encoder.model_id, "cache": str(settings.cache_dir),
            "seconds": round(time.perf_counter() - started, 2)}


class Embedder:
    """The catalogue's model: the one asked for, else the one the catalogue was built
    with (it records how to load it), else the default."""

    def __init__(self, settings: Settings, catalog: Catalog, encoder: Encoder | None = None):
        self.settings = settings
        self.catalog = catalog
        self.decode_limits = DecodeLimits(max_pixels=settings.max_pixels)
        self._encoder = encoder
        self.loaded_spec: str | None = None
        self._spec_recorded = False
        self.query_mode = settings.query_mode

    @property
    def query_mode(self) -> str:
        return self._query_mode

    @query_mode.setter
    def query_mode(self, mode: str) -> None:
        if mode not in QUERY_MODES:
            raise LookalikeError(f"unknown query mode {mode!r}; choose one of {', '.join(QUERY_MODES)}")
        self._query_mode = mode

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            spec = self.settings.model or self.stored_spec() or DEFAULT_MODEL
            self._encoder = _load(spec, self.settings)
            self.loaded_spec, self._spec_recorded = spec, False
        return self._encoder

    @property
    def model_id(self) -> str:
        """The model whose vectors are used: the one asked for, else the catalogue's
        (so removing or checking items never loads a model)."""
        if self._encoder is not None or self.settings.model:
            return self.encoder.model_id
        return self.catalog.model_id or self.encoder.model_id

    def stored_spec(self) -> str | None:
        model_id = self.catalog.model_id
        if not model_id:
            return None
        stored = self.catalog.get_meta("model_spec")
        if stored and stored.partition("@")[2] == model_id:
            return stored.partition("@")[0]
        # Catalogues written before the spec was recorded: built-in ids read name:pooling:size:pN[:int8].
        parts = model_id.split(":")
        options = [part for part in parts[1:3] if part] + (["int8"] if "int8" in parts[3:] else [])
        return ":".join([parts[0], *options])

    def remember_spec(self) -> None:
        """Record how to load this catalogue's model (``hf:...``, ``...:int8``), which its model id alone does not say."""
        if not self.loaded_spec or self._spec_recorded:
            return
        if self.catalog.model_id == self.model_id:
            record = f"{self.loaded_spec}@{self.model_id}"
            if self.catalog.get_meta("model_spec") != record:
                self.catalog.set_meta("model_spec", record)
            self._spec_recorded = True

    # -- photos to vectors -------------------------------------------------------------
    def decode(self, source: ImageInput, target_size: int | None) -> Image.Image:
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        return decode_image(source, target_size=target_size, limits=self.decode_limits)

    def prepare(self, source: ImageInput) -> np.ndarray:
        return self.encoder.preprocess(self.decode(source, self.encoder.decode_size))

    def embed_arrays(self, arrays: list[np.ndarray]) -> np.ndarray:
        if not arrays:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.concatenate([self.encoder.embed_arrays(np.stack(arrays[i : i + BATCH_SIZE]))
                               for i in range(0, len(arrays), BATCH_SIZE)])

    def embed(self, sources: Sequence[ImageInput]) -> np.ndarray:
        """One unit vector per image, as stored for catalogue items; raises ImageDecodeError for a bad image."""
        return self.embed_arrays([self.prepare(source) for source in sources])

    def embed_query(self, query: ImageInput) -> np.ndarray:
        """Unit vectors of the query's views (see encoders/views.py)."""
        # Crops need detail, so decode at twice the model's size (a decoded image is taken as it is).
        image = self.decode(query, 2 * self.encoder.decode_size)
        boxes = view_boxes(image.size, self.query_mode)
        # An encoder may prepare all views from one resize per crop size (several times cheaper than one each).
        batch = self.encoder.preprocess_views(image, boxes) if hasattr(self.encoder, "preprocess_views") else None
        if batch is None:
            return self.embed_arrays([self.encoder.preprocess(image.crop(box)) for box in boxes])
        return self.embed_arrays(list(batch))

    @property
    def supports_text(self) -> bool:
        # embed_texts (and has_text, for models that may lack the tower) are an optional part of the Encoder interface.
        return hasattr(self.encoder, "embed_texts") and getattr(self.encoder, "has_text", True)

    def embed_text(self, text: str) -> np.ndarray:
        if not self.supports_text:
            raise LookalikeError(f"model {self.model_id} has no text tower: text search needs a CLIP model (--model hf:FOLDER)")
        return self.encoder.embed_texts([text])
