"""A compressed HNSW index for catalogues that must fit in little memory.

Vectors are projected onto their top principal directions (PCA learned on the
catalogue itself, 256 of 1280 dimensions by default) and the HNSW graph is
built over the projections, a fifth of the memory. Each search takes
``rerank`` times k candidates from the graph and re-ranks them exactly with
the full vectors, fetched from ``vector_source`` (the catalogue store, which
keeps them on disk anyway), so the scores returned are exact cosines.

Until ``train_size`` vectors are present there is nothing to learn the
projection from; the index then answers by an exact scan of the source.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

from lookalike.index.base import ApproximateIndex, as_keys, as_vectors, read_meta, top_k, write_meta

VectorSource = Callable[[np.ndarray], np.ndarray]


class CompressedHnswIndex(ApproximateIndex):
    backend = "hnsw-pca"

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
        self._graph: hnswlib.Index | None = None
        self._live: set[int] = set()
        self._pending: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._live)

    def contains(self, key: int) -> bool:
        return key in self._live

    def keys(self) -> np.ndarray:
        return np.fromiter(sorted(self._live), dtype=np.int64, count=len(self._live))

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        keys = as_keys(keys)
        if self._pending and all(key in self._pending for key in keys.tolist()):
            return np.stack([self._pending[key] for key in keys.tolist()]) if len(keys) else np.zeros((0, self.dim), np.float32)
        if self.vector_source is None:
            raise RuntimeError("the compressed index needs a vector source to re-rank (the catalogue store)")
        return np.asarray(self.vector_source(keys), dtype=np.float32)

    def _train(self, vectors: np.ndarray) -> None:
        _, _, right = np.linalg.svd(vectors, full_matrices=False)
        self.projection = np.ascontiguousarray(right[: self.components].T.astype(np.float32))
        self._graph = hnswlib.Index(space="ip", dim=self.components)
        self._graph.init_index(max_elements=max(self.capacity, len(vectors) * 2), M=self.m,
                               ef_construction=self.ef_construction, allow_replace_deleted=True)

    def _insert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        needed = self._graph.get_current_count() + len(keys)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        present = np.asarray([key in self._live for key in keys.tolist()])
        projected = vectors @ self.projection
        if present.any():
            self._graph.add_items(projected[present], keys[present], replace_deleted=False)
        if (~present).any():
            self._graph.add_items(projected[~present], keys[~present], replace_deleted=True)

    def add(self, keys, vectors) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if self._graph is None:
            self._pending.update(zip(keys.tolist(), vectors))
            self._live.update(keys.tolist())
            if len(self._pending) >= self.train_size:
                pending_keys = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
                pending_vectors = np.stack(list(self._pending.values()))
                self._train(pending_vectors)
                self._live.clear()
                self._insert(pending_keys, pending_vectors)
                self._live.update(pending_keys.tolist())
                self._pending.clear()
            return
        self._insert(keys, vectors)
        self._live.update(keys.tolist())

    def remove(self, keys) -> None:
        for key in as_keys(keys).tolist():
            if key not in self._live:
                continue
            self._live.discard(key)
            if self._graph is None:
                self._pending.pop(key, None)
            else:
                self._graph.mark_deleted(key)

    def approximate(self, queries: np.ndarray, k: int, accept: set | None):
        if self._graph is None:
            return None  # not trained yet: the exact scan answers
        wanted = min(len(self), k * self.rerank)
        self._graph.set_ef(max(self.ef_search, wanted))
        try:
            labels, _ = self._graph.knn_query(queries @ self.projection, k=wanted, num_threads=1,
                                              filter=accept.__contains__ if accept is not None else None)
        except RuntimeError:
            return None
        out_keys = np.empty((len(queries), k), np.int64)
        out_scores = np.empty((len(queries), k), np.float32)
        for row, (query, candidates) in enumerate(zip(queries, labels.astype(np.int64))):
            keys, scores = top_k(query[None] @ self.vectors_for(candidates).T, candidates, k)
            out_keys[row], out_scores[row] = keys[0], scores[0]
        return out_keys, out_scores

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._graph is not None:
            self._graph.save_index(str(directory / "hnsw.bin"))
            np.save(directory / "projection.npy", self.projection)
        np.save(directory / "live.npy", self.keys())
        if self._pending:
            np.save(directory / "pending_keys.npy", np.fromiter(self._pending, np.int64, len(self._pending)))
            np.save(directory / "pending_vectors.npy", np.stack(list(self._pending.values())))
        write_meta(directory, {"backend": self.backend, "dim": self.dim, "components": self.components,
                               "rerank": self.rerank, "m": self.m, "ef_construction": self.ef_construction,
                               "ef_search": self.ef_search, "train_size": self.train_size, "count": len(self),
                               "trained": self._graph is not None})

    @classmethod
    def load(cls, directory: Path) -> CompressedHnswIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        index = cls(meta["dim"], meta["components"], meta["rerank"], meta["m"], meta["ef_construction"],
                    meta["ef_search"], meta["train_size"])
        index._live = set(np.load(directory / "live.npy").tolist())
        if meta["trained"]:
            index.projection = np.load(directory / "projection.npy")
            index._graph = hnswlib.Index(space="ip", dim=index.components)
            index._graph.load_index(str(directory / "hnsw.bin"), allow_replace_deleted=True)
        elif (directory / "pending_keys.npy").exists():
            keys, vectors = np.load(directory / "pending_keys.npy"), np.load(directory / "pending_vectors.npy")
            index._pending = dict(zip(keys.tolist(), vectors))
        if len(index._live) != meta["count"]:
            raise ValueError("index files are inconsistent")
        return index
