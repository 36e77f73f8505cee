"""Approximate search with hnswlib's HNSW graph.

Deletes are hnswlib tombstones (``mark_deleted``) whose slots new items
reuse (``allow_replace_deleted``), so the catalogue changes daily without a
rebuild and the graph does not grow with churn.
"""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

from lookalike.index.base import ApproximateIndex, as_keys, as_vectors, read_meta, write_meta


class HnswIndex(ApproximateIndex):
    backend = "hnsw"

    def __init__(self, dim: int, m: int = 16, ef_construction: int = 200, ef_search: int = 64, capacity: int = 1024):
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._graph = hnswlib.Index(space="ip", dim=dim)
        self._graph.init_index(max_elements=capacity, M=m, ef_construction=ef_construction, allow_replace_deleted=True)
        self._graph.set_ef(ef_search)
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def contains(self, key: int) -> bool:
        return key in self._live

    def keys(self) -> np.ndarray:
        return np.fromiter(sorted(self._live), dtype=np.int64, count=len(self._live))

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(self._graph.get_items(keys), dtype=np.float32)

    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        if len(keys) == 0:
            return
        needed = self._graph.get_current_count() + len(keys)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        present = np.asarray([key in self._live for key in keys.tolist()])
        if present.any():
            # Replacing in place keeps the key's slot; hnswlib updates the links.
            self._graph.add_items(vectors[present], keys[present], replace_deleted=False)
        if (~present).any():
            self._graph.add_items(vectors[~present], keys[~present], replace_deleted=True)
        self._live.update(keys.tolist())

    def remove(self, keys) -> None:
        for key in as_keys(keys).tolist():
            if key in self._live:
                self._graph.mark_deleted(key)
                self._live.discard(key)

    def approximate(self, queries: np.ndarray, k: int, accept: set | None):
        self._graph.set_ef(max(self.ef_search, k))
        try:
            labels, distances = self._graph.knn_query(
                queries, k=k, filter=accept.__contains__ if accept is not None else None, num_threads=1)
        except RuntimeError:  # hnswlib found fewer than k: too few reachable matches
            return None
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._graph.save_index(str(directory / "hnsw.bin"))
        np.save(directory / "live.npy", self.keys())
        write_meta(
            directory,
            {"backend": self.backend, "dim": self.dim, "m": self.m, "ef_construction": self.ef_construction,
             "ef_search": self.ef_search, "count": len(self)},
        )

    @classmethod
    def load(cls, directory: Path, **context) -> HnswIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        index = cls(meta["dim"], meta["m"], meta["ef_construction"], meta["ef_search"], capacity=1)
        index._graph = hnswlib.Index(space="ip", dim=meta["dim"])
        index._graph.load_index(str(directory / "hnsw.bin"), allow_replace_deleted=True)
        index._graph.set_ef(meta["ef_search"])
        index._live = set(np.load(directory / "live.npy").tolist())
        if len(index._live) != meta["count"]:
            raise ValueError("index files are inconsistent")
        return index
