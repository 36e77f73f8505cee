"""An in-memory table of (key, vector) rows with O(1) adds and tombstone deletes.

Rows grow by doubling; a delete marks its row dead and the table compacts
itself once a quarter of the rows are dead, so neither adding one item nor
removing one copies the whole catalogue.
"""

from __future__ import annotations

import numpy as np

from lookalike.index.base import as_keys, as_vectors, top_k

BLOCK_ROWS = 65536


class VectorTable:
    def __init__(self, dim: int, dtype: str = "float32", capacity: int = 1024):
        if dtype not in ("float32", "float16"):
            raise ValueError("dtype must be float32 or float16")
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self._vectors = np.zeros((capacity, dim), dtype=self.dtype)
        self._keys = np.full(capacity, -1, dtype=np.int64)
        self._alive = np.zeros(capacity, dtype=bool)
        self._used = 0
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    def contains(self, key: int) -> bool:
        return key in self._row_of

    def keys(self) -> np.ndarray:
        return self._keys[: self._used][self._alive[: self._used]].copy()

    def reserve(self, rows: int) -> None:
        if rows <= len(self._keys):
            return
        capacity = max(rows, 2 * len(self._keys))
        vectors = np.zeros((capacity, self.dim), dtype=self.dtype)
        vectors[: self._used] = self._vectors[: self._used]
        keys = np.full(capacity, -1, dtype=np.int64)
        keys[: self._used] = self._keys[: self._used]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self._used] = self._alive[: self._used]
        self._vectors, self._keys, self._alive = vectors, keys, alive

    def add(self, keys, vectors) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        fresh = []
        for position, key in enumerate(keys.tolist()):
            row = self._row_of.get(key)
            if row is not None:
                self._vectors[row] = vectors[position]
            else:
                fresh.append(position)
        if not fresh:
            return
        fresh_keys, unique = np.unique(keys[fresh][::-1], return_index=True)
        fresh_vectors = vectors[fresh][::-1][unique]
        self.reserve(self._used + len(fresh_keys))
        rows = slice(self._used, self._used + len(fresh_keys))
        self._vectors[rows] = fresh_vectors
        self._keys[rows] = fresh_keys
        self._alive[rows] = True
        self._row_of.update(zip(fresh_keys.tolist(), range(self._used, self._used + len(fresh_keys))))
        self._used += len(fresh_keys)

    def remove(self, keys) -> None:
        for key in as_keys(keys).tolist():
            row = self._row_of.pop(key, None)
            if row is not None:
                self._alive[row] = False
        if self._used > 1024 and self._used - len(self._row_of) > self._used // 4:
            self.compact()

    def compact(self) -> None:
        live = np.flatnonzero(self._alive[: self._used])
        count = len(live)
        self._vectors[:count] = self._vectors[live]
        self._keys[:count] = self._keys[live]
        self._alive[:count] = True
        self._alive[count : self._used] = False
        self._keys[count : self._used] = -1
        self._used = count
        self._row_of = dict(zip(self._keys[:count].tolist(), range(count)))

    def vectors_for(self, keys) -> np.ndarray:
        rows = [self._row_of[key] for key in as_keys(keys).tolist()]
        return self._vectors[rows].astype(np.float32)

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        alive = self._alive[: self._used]
        return self._keys[: self._used][alive], self._vectors[: self._used][alive].astype(np.float32)

    def row_mask(self, keys: np.ndarray) -> np.ndarray:
        """A boolean mask over the rows holding ``keys`` (unknown keys ignored)."""
        mask = np.zeros(self._used, dtype=bool)
        rows = [row for key in keys.tolist() if (row := self._row_of.get(key)) is not None]
        mask[rows] = True
        return mask

    def scan(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over every live row (or the rows in the mask ``rows``), in
        blocks so memory stays bounded."""
        best_keys = best_scores = None
        for start in range(0, max(self._used, 1), BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, self._used)
            block = self._vectors[start:stop]
            scores = queries @ (block.T if block.dtype == np.float32 else block.T.astype(np.float32))
            excluded = ~self._alive[start:stop] if rows is None else ~(self._alive[start:stop] & rows[start:stop])
            scores[:, excluded] = -np.inf
            keys, values = top_k(scores, self._keys[start:stop], k)
            if best_keys is None:
                best_keys, best_scores = keys, values
                continue
            merged_scores = np.concatenate([best_scores, values], axis=1)
            merged_keys = np.concatenate([best_keys, keys], axis=1)
            order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
            best_keys = np.take_along_axis(merged_keys, order, axis=1)
            best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_keys[~np.isfinite(best_scores)] = -1
        return best_keys, best_scores
