"""Exact search with numpy: the ground truth, and the fastest choice for small catalogues."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.index.base import as_keys, as_vectors, read_meta, top_k, write_meta

BLOCK_ROWS = 65536


class ExactIndex:
    backend = "exact"

    def __init__(self, dim: int):
        self.dim = dim
        self._keys = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> np.ndarray:
        return self._keys.copy()

    def add(self, keys, vectors) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        keys, last = np.unique(keys[::-1], return_index=True)
        vectors = vectors[::-1][last]
        self.remove(keys)
        self._keys = np.concatenate([self._keys, keys])
        self._vectors = np.concatenate([self._vectors, vectors])

    def remove(self, keys) -> None:
        keep = ~np.isin(self._keys, as_keys(keys))
        if not keep.all():
            self._keys, self._vectors = self._keys[keep], self._vectors[keep]

    def vectors_for(self, keys) -> np.ndarray:
        positions = {key: row for row, key in enumerate(self._keys.tolist())}
        return self._vectors[[positions[key] for key in as_keys(keys).tolist()]]

    def search(self, queries, k: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        keys, vectors = self._keys, self._vectors
        if allowed is not None:
            mask = np.isin(keys, as_keys(allowed))
            keys, vectors = keys[mask], vectors[mask]
        if len(keys) <= BLOCK_ROWS:
            return top_k(queries @ vectors.T, keys, k)
        # Blocked, so memory stays bounded on big catalogues.
        best_keys, best_scores = None, None
        for start in range(0, len(keys), BLOCK_ROWS):
            block_keys, block_scores = top_k(queries @ vectors[start : start + BLOCK_ROWS].T, keys[start : start + BLOCK_ROWS], k)
            if best_keys is None:
                best_keys, best_scores = block_keys, block_scores
                continue
            merged_scores = np.concatenate([best_scores, block_scores], axis=1)
            merged_keys = np.concatenate([best_keys, block_keys], axis=1)
            order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
            best_keys = np.take_along_axis(merged_keys, order, axis=1)
            best_scores = np.take_along_axis(merged_scores, order, axis=1)
        return best_keys, best_scores

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "keys.npy", self._keys)
        np.save(directory / "vectors.npy", self._vectors)
        write_meta(directory, {"backend": self.backend, "dim": self.dim, "count": len(self)})

    @classmethod
    def load(cls, directory: Path) -> ExactIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        index = cls(meta["dim"])
        index._keys = np.load(directory / "keys.npy")
        index._vectors = np.load(directory / "vectors.npy")
        if len(index._keys) != meta["count"] or len(index._vectors) != meta["count"]:
            raise ValueError("index files are inconsistent")
        return index
