"""Index backends behind one contract (index/base.py): exact (numpy), HNSW (hnswlib),
compressed HNSW, Annoy (the original design's baseline), Milvus and pgvector."""

from __future__ import annotations

from pathlib import Path

from lookalike.index.annoy_index import AnnoyIndex
from lookalike.index.base import MISSING_KEY, VectorIndex, VectorSource, read_meta
from lookalike.index.compressed import CompressedHnswIndex
from lookalike.index.exact import ExactIndex
from lookalike.index.hnsw import HnswIndex
from lookalike.index.milvus_index import MilvusIndex
from lookalike.index.pgvector_index import PgvectorIndex

BACKENDS: dict[str, type[VectorIndex]] = {"exact": ExactIndex, "hnsw": HnswIndex, "hnsw-pca": CompressedHnswIndex,
                                          "annoy": AnnoyIndex, "milvus": MilvusIndex,
                                          "pgvector": PgvectorIndex}
#: Below this many photo vectors exact search is both exact and fast enough.
AUTO_EXACT_LIMIT = 20_000
#: Above this many, hnsw's memory (5.2 GB per million 1280-d vectors for the graph, measured: benchmarks/README.md,
#: as much again for the contiguous copy its filtered searches re-rank from, and 0.5 GB for the projected copy they
#: scan) would take more than half a 24 GB machine,
#: so auto picks the compressed graph (1.4 GB per million, re-ranked exactly from the store). A million lots of five
#: photos each is five million vectors: about 7 GB as hnsw-pca, 51 GB as hnsw.
AUTO_HNSW_LIMIT = 1_000_000


def choose_backend(requested: str, item_count: int) -> str:
    """The backend for a catalogue of ``item_count`` photo vectors."""
    if requested == "auto":
        if item_count <= AUTO_EXACT_LIMIT:
            return "exact"
        return "hnsw" if item_count <= AUTO_HNSW_LIMIT else "hnsw-pca"
    if requested not in BACKENDS:
        raise ValueError(f"unknown index backend {requested!r}; choose auto, {', '.join(BACKENDS)}")
    return requested


def _context(backend: type[VectorIndex], settings, home: Path | None, vector_source: VectorSource | None) -> dict:
    context = backend.connection_options(settings, Path(home or ".")) if settings is not None else {}
    if backend.needs_stored_vectors:
        context["vector_source"] = vector_source
    return context


def create_index(backend: str, dim: int, *, settings=None, home: Path | None = None,
                 vector_source: VectorSource | None = None, **options) -> VectorIndex:
    """A new, empty index. ``settings`` (lookalike.config.Settings) and ``home`` (the catalogue
    folder) supply what a backend needs from its surroundings; ``options`` tune it."""
    cls = BACKENDS[backend]
    return cls(dim, **{**_context(cls, settings, home, vector_source), **options})


def attach_index(backend: str, dim: int, *, settings=None, home: Path | None = None,
                 vector_source: VectorSource | None = None, **options) -> VectorIndex | None:
    """The shared index (a Milvus server's collection, a pgvector table) as it stands, or None."""
    cls = BACKENDS[backend]
    return cls.attach(dim, **{**_context(cls, settings, home, vector_source), **options})


def load_index(directory: Path, *, settings=None, home: Path | None = None,
               vector_source: VectorSource | None = None) -> VectorIndex:
    cls = BACKENDS[read_meta(directory)["backend"]]
    return cls.load(directory, **_context(cls, settings, home, vector_source))


__all__ = ["AUTO_EXACT_LIMIT", "AUTO_HNSW_LIMIT", "BACKENDS", "MISSING_KEY", "AnnoyIndex", "CompressedHnswIndex", "ExactIndex", "HnswIndex",
           "MilvusIndex", "PgvectorIndex", "VectorIndex", "VectorSource", "attach_index", "choose_backend", "create_index",
           "load_index"]
