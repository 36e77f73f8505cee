"""Approximate search with hnswlib's HNSW graph.

Deletes are hnswlib tombstones (``mark_deleted``) whose slots new items
reuse, so the catalogue changes daily without a rebuild. Filtered searches
stay exact in what they return: a selective filter is answered by an exact
scan of the matching vectors, a broad one by the graph with a filter, and
if the graph finds fewer than k matches the exact scan answers instead.
"""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

from lookalike.index.base import MISSING_KEY, as_keys, as_vectors, read_meta, top_k, write_meta

#: A filter matching at most this share of the index is answered exactly.
EXACT_FILTER_FRACTION = 0.05
EXACT_FILTER_MIN_ROWS = 4096


class HnswIndex:
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

    def keys(self) -> np.ndarray:
        return np.fromiter(sorted(self._live), dtype=np.int64, count=len(self._live))

    def add(self, keys, vectors) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        if len(keys) == 0:
            return
        needed = self._graph.get_current_count() + len(keys)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        present = [key for key in keys.tolist() if key in self._live]
        fresh_mask = ~np.isin(keys, present)
        if present:
            # Replacing in place keeps the key's slot; hnswlib updates the links.
            self._graph.add_items(vectors[~fresh_mask], keys[~fresh_mask], replace_deleted=False)
        if fresh_mask.any():
            self._graph.add_items(vectors[fresh_mask], keys[fresh_mask], replace_deleted=True)
        self._live.update(keys.tolist())

    def remove(self, keys) -> None:
        for key in as_keys(keys).tolist():
            if key in self._live:
                self._graph.mark_deleted(key)
                self._live.discard(key)

    def _exact(self, queries: np.ndarray, k: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(keys) == 0:
            return top_k(np.zeros((len(queries), 0), np.float32), keys, k)
        vectors = np.asarray(self._graph.get_items(keys), dtype=np.float32)
        return top_k(queries @ vectors.T, keys, k)

    def search(self, queries, k: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        if allowed is not None:
            allowed_keys = np.asarray([key for key in as_keys(allowed).tolist() if key in self._live], dtype=np.int64)
            if len(allowed_keys) <= max(EXACT_FILTER_MIN_ROWS, EXACT_FILTER_FRACTION * len(self)):
                return self._exact(queries, k, allowed_keys)
            allowed_set = set(allowed_keys.tolist())
            found = self._graph_search(queries, min(k, len(allowed_keys)), allowed_set.__contains__)
            if found is None:
                return self._exact(queries, k, allowed_keys)
            return _pad(*found, k)
        take = min(k, len(self))
        if take == 0:
            return _pad(np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32), k)
        found = self._graph_search(queries, take, None)
        if found is None:
            return self._exact(queries, k, self.keys())
        return _pad(*found, k)

    def _graph_search(self, queries: np.ndarray, k: int, accept) -> tuple[np.ndarray, np.ndarray] | None:
        self._graph.set_ef(max(self.ef_search, k))
        try:
            labels, distances = self._graph.knn_query(queries, k=k, filter=accept, num_threads=1)
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
    def load(cls, directory: Path) -> HnswIndex:
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


def _pad(keys: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_queries, width = keys.shape
    out_keys = np.full((n_queries, k), MISSING_KEY, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    out_keys[:, :width], out_scores[:, :width] = keys, scores
    return out_keys, out_scores
