"""A compressed HNSW index for catalogues that must fit in little memory.

Vectors are projected onto their top principal directions (PCA learned on the
catalogue itself, 256 of 1280 dimensions by default) and an HNSW graph
(``HnswIndex``) is built over the projections, a fifth of the memory. Each
search takes ``rerank`` times k candidates from the graph and re-ranks them
exactly with the full vectors, fetched from ``vector_source`` (the catalogue
store, which keeps them on disk anyway), so the scores returned are exact.

Until ``train_size`` vectors are present there is nothing to learn the
projection from; they are held as they are and searched exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.index.base import ApproximateIndex, VectorSource, as_keys, as_vectors, read_meta, top_k, write_meta
from lookalike.index.hnsw import HnswIndex


class CompressedHnswIndex(ApproximateIndex):
    backend = "hnsw-pca"
    needs_stored_vectors = True

    def __init__(self, dim: int, components: int = 256, rerank: int = 4, m: int = 16, ef_construction: int = 200,
                 ef_search: int = 128, train_size: int = 20_000, capacity: int = 1024,
                 vector_source: VectorSource | None = None):
        self.dim = dim
        self.components = min(components, dim)
        self.rerank = rerank
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.train_size = train_size
        self.capacity = capacity
        self.vector_source = vector_source
        self.projection: np.ndarray | None = None
        self._graph: HnswIndex | None = None
        self._pending: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._graph) if self._graph is not None else len(self._pending)

    def contains(self, key: int) -> bool:
        return self._graph.contains(key) if self._graph is not None else key in self._pending

    def keys(self) -> np.ndarray:
        if self._graph is not None:
            return self._graph.keys()
        return np.fromiter(sorted(self._pending), dtype=np.int64, count=len(self._pending))

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        keys = as_keys(keys)
        if self._graph is None:
            return np.stack([self._pending[key] for key in keys.tolist()]) if len(keys) else np.zeros((0, self.dim), np.float32)
        if self.vector_source is None:
            raise RuntimeError("the compressed index needs a vector source to re-rank (the catalogue store): pass vector_source")
        return np.asarray(self.vector_source(keys), dtype=np.float32)

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        # Normalised, so the graph ranks by cosine in the projection: raw inner products would
        # favour items whose energy happens to lie in the kept directions over the closest ones.
        projected = vectors @ self.projection
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)

    def _train(self) -> None:
        keys = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
        vectors = np.stack(list(self._pending.values()))
        _, _, right = np.linalg.svd(vectors, full_matrices=False)
        self.projection = np.ascontiguousarray(right[: self.components].T.astype(np.float32))
        self._graph = HnswIndex(self.components, self.m, self.ef_construction, self.ef_search,
                                capacity=max(self.capacity, 2 * len(keys)), keep_vectors=False)  # re-ranks from the store
        self._graph.add(keys, self._project(vectors))
        self._pending.clear()

    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if self._graph is not None:
            self._graph.add(keys, self._project(vectors))
            return
        self._pending.update(zip(keys.tolist(), vectors))
        if len(self._pending) >= self.train_size:
            self._train()

    def remove(self, keys) -> None:
        if self._graph is not None:
            self._graph.remove(keys)
            return
        for key in as_keys(keys).tolist():
            self._pending.pop(key, None)

    def approximate(self, queries: np.ndarray, k: int, accept: set | None):
        if self._graph is None:
            return None  # not trained yet: the exact scan answers
        self._graph.ef_search = self.ef_search
        found = self._graph.approximate(self._project(queries), min(len(self), k * self.rerank), accept)
        if found is None:
            return None
        out_keys = np.empty((len(queries), k), np.int64)
        out_scores = np.empty((len(queries), k), np.float32)
        for row, (query, candidates) in enumerate(zip(queries, found[0])):
            keys, scores = top_k(query[None] @ self.vectors_for(candidates).T, candidates, k)
            out_keys[row], out_scores[row] = keys[0], scores[0]
        return out_keys, out_scores

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._graph is not None:
            self._graph.save(directory / "graph")
            np.save(directory / "projection.npy", self.projection)
        else:
            np.save(directory / "pending_keys.npy", self.keys())
            np.save(directory / "pending_vectors.npy", self.vectors_for(self.keys()))
        write_meta(directory, {"backend": self.backend, "dim": self.dim, "components": self.components,
                               "rerank": self.rerank, "m": self.m, "ef_construction": self.ef_construction,
                               "ef_search": self.ef_search, "train_size": self.train_size, "count": len(self),
                               "trained": self._graph is not None})

    @classmethod
    def load(cls, directory: Path, vector_source: VectorSource | None = None, **context) -> CompressedHnswIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        index = cls(meta["dim"], meta["components"], meta["rerank"], meta["m"], meta["ef_construction"],
                    meta["ef_search"], meta["train_size"], vector_source=vector_source)
        if meta["trained"]:
            index.projection = np.load(directory / "projection.npy")
            index._graph = HnswIndex.load(directory / "graph")
        else:
            keys, vectors = np.load(directory / "pending_keys.npy"), np.load(directory / "pending_vectors.npy")
            index._pending = dict(zip(keys.tolist(), vectors))
        if len(index) != meta["count"]:
            raise ValueError("index files are inconsistent")
        return index
