"""Index backends behind one small interface: exact (numpy), HNSW (hnswlib), Annoy (baseline)."""

from __future__ import annotations

from pathlib import Path

from lookalike.index.annoy_index import AnnoyIndex
from lookalike.index.base import MISSING_KEY, VectorIndex, read_meta
from lookalike.index.compressed import CompressedHnswIndex
from lookalike.index.exact import ExactIndex
from lookalike.index.hnsw import HnswIndex
from lookalike.index.milvus_index import MilvusIndex

BACKENDS = {"exact": ExactIndex, "hnsw": HnswIndex, "hnsw-pca": CompressedHnswIndex, "annoy": AnnoyIndex,
            "milvus": MilvusIndex}
#: Below this many items exact search is both exact and fast enough.
AUTO_EXACT_LIMIT = 20_000


def choose_backend(requested: str, item_count: int) -> str:
    if requested == "auto":
        return "exact" if item_count <= AUTO_EXACT_LIMIT else "hnsw"
    if requested not in BACKENDS:
        raise ValueError(f"unknown index backend {requested!r}; choose auto, {', '.join(BACKENDS)}")
    return requested


def create_index(backend: str, dim: int, **params) -> VectorIndex:
    return BACKENDS[backend](dim, **params)


def load_index(directory: Path) -> VectorIndex:
    backend = read_meta(directory)["backend"]
    return BACKENDS[backend].load(directory)


__all__ = ["AUTO_EXACT_LIMIT", "BACKENDS", "MISSING_KEY", "AnnoyIndex", "CompressedHnswIndex", "ExactIndex", "HnswIndex",
           "MilvusIndex", "VectorIndex",
           "choose_backend", "create_index", "load_index"]
