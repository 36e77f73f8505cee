"""Spotify's Annoy, the original design's index, kept as the baseline.

Annoy is static: a built forest cannot take an add or a delete. This backend
keeps the vectors beside it and rebuilds the forest on the first search after
any change, which costs O(N log N) — fine for benchmarks and read-mostly
catalogues, not for a catalogue that changes while it is searched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from annoy import AnnoyIndex as Forest

from lookalike.index.base import ApproximateIndex, read_meta, write_meta
from lookalike.index.table import VectorTable

#: Below this many vectors the forest is built on one thread: well under a second, and reproducible.
SINGLE_THREAD_BELOW = 50_000


class AnnoyIndex(ApproximateIndex):
    backend = "annoy"

    def __init__(self, dim: int, n_trees: int = 50, search_k: int = -1, capacity: int = 1024):
        self.dim = dim
        self.n_trees = n_trees
        self.search_k = search_k
        self.table = VectorTable(dim, capacity=capacity)
        self._forest: Forest | None = None
        self._row_keys = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.table)

    def contains(self, key: int) -> bool:
        return self.table.contains(key)

    def keys(self) -> np.ndarray:
        return self.table.keys()

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        return self.table.vectors_for(keys)

    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        self.table.add(keys, vectors)
        self._forest = None

    def remove(self, keys) -> None:
        self.table.remove(keys)
        self._forest = None

    def build(self, threads: int = -1) -> None:
        keys, vectors = self.table.live_vectors()
        if len(keys) < SINGLE_THREAD_BELOW:
            # Annoy's threaded build interleaves node writes; a small forest built on one thread
            # answers exactly as it does once saved and loaded (a CI run under load saw it differ).
            threads = 1
        forest = Forest(self.dim, "dot")
        for row, vector in enumerate(vectors):
            forest.add_item(row, vector)
        forest.build(self.n_trees, n_jobs=threads)
        self._forest, self._row_keys = forest, keys

    def approximate(self, queries: np.ndarray, k: int, accept: set | None):
        if self._forest is None:
            self.build()
        # With a filter, ask for more candidates in proportion to how few match.
        share = len(accept) / max(len(self), 1) if accept is not None else 1.0
        wanted = min(len(self), int(np.ceil(k / max(share, 1e-6) * 2))) if accept is not None else k
        search_k = self.search_k if self.search_k > 0 else -1
        if search_k > 0 and accept is not None:
            search_k = int(search_k * wanted / max(k, 1))
        out_keys = np.empty((len(queries), k), dtype=np.int64)
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        for position, query in enumerate(queries):
            rows, scores = self._forest.get_nns_by_vector(query, wanted, search_k=search_k, include_distances=True)
            keys = self._row_keys[rows]
            if accept is not None:
                chosen = [index for index, key in enumerate(keys.tolist()) if key in accept]
                keys, scores = keys[chosen], np.asarray(scores)[chosen]
            if len(keys) < k:
                return None
            out_keys[position], out_scores[position] = keys[:k], np.asarray(scores[:k], dtype=np.float32)
        return out_keys, out_scores

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._forest is None:
            self.build()
        self._forest.save(str(directory / "annoy.ann"))
        keys, vectors = self.table.live_vectors()
        np.save(directory / "keys.npy", keys)
        np.save(directory / "vectors.npy", vectors)
        np.save(directory / "row_keys.npy", self._row_keys)
        write_meta(directory, {"backend": self.backend, "dim": self.dim, "n_trees": self.n_trees,
                               "search_k": self.search_k, "count": len(self)})

    @classmethod
    def load(cls, directory: Path, **context) -> AnnoyIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        index = cls(meta["dim"], meta["n_trees"], meta["search_k"])
        keys, vectors = np.load(directory / "keys.npy"), np.load(directory / "vectors.npy")
        if len(keys) != meta["count"]:
            raise ValueError("index files are inconsistent")
        index.table.reserve(len(keys))
        index.table.add(keys, vectors)
        forest = Forest(meta["dim"], "dot")
        forest.load(str(directory / "annoy.ann"))
        index._forest, index._row_keys = forest, np.load(directory / "row_keys.npy")
        return index
