"""The index interface every backend implements (hnswlib/usearch style).

Keys are int64 (the catalogue's item keys); vectors are L2-normalised float32,
so inner product is the cosine similarity. ``allowed`` restricts a search to
a set of keys: a search returns ``min(k, len(allowed ∩ index))`` results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MISSING_KEY = -1


@runtime_checkable
class VectorIndex(Protocol):
    backend: str
    dim: int

    def __len__(self) -> int: ...

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors; a key already present gets its vector replaced."""

    def remove(self, keys: np.ndarray) -> None:
        """Forget keys; unknown keys are ignored."""

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(keys, scores), each (n_queries, k), best first; unused slots are
        MISSING_KEY with score -inf."""

    def keys(self) -> np.ndarray: ...

    def save(self, directory: Path) -> None:
        """Write the index into ``directory`` (a fresh folder: the caller swaps
        it into place, so a reader never sees a half-written index)."""


def as_keys(keys) -> np.ndarray:
    return np.atleast_1d(np.asarray(keys, dtype=np.int64))


def as_vectors(vectors, dim: int) -> np.ndarray:
    array = np.ascontiguousarray(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
    if array.shape[1] != dim:
        raise ValueError(f"vectors have {array.shape[1]} dimensions, the index has {dim}")
    return array


def top_k(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k of each row of ``scores`` (n, m) over ``keys`` (m,), padded."""
    n_queries, n_candidates = scores.shape
    out_keys = np.full((n_queries, k), MISSING_KEY, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    take = min(k, n_candidates)
    if take == 0:
        return out_keys, out_scores
    if take < n_candidates:
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.tile(np.arange(n_candidates), (n_queries, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    out_keys[:, :take] = keys[best]
    out_scores[:, :take] = np.take_along_axis(part_scores, order, axis=1)
    return out_keys, out_scores


def write_meta(directory: Path, meta: dict) -> None:
    (Path(directory) / "meta.json").write_text(json.dumps(meta))


def read_meta(directory: Path) -> dict:
    return json.loads((Path(directory) / "meta.json").read_text())


#: A filter matching at most this many items is answered by an exact scan of the matches. Measured at
#: 100k items (benchmarks/README.md): the scan takes 3 ms for 100 matches and 49 ms for 1,000, while the
#: graph with a filter takes 51 ms for 100 matches and 8 ms for 1,000; the cost of the scan grows with the
#: matches and that of the graph with their rarity, so the cross-over is a count, not a share.
EXACT_FILTER_MAX_ROWS = 500


def pad(keys: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_queries, width = keys.shape
    out_keys = np.full((n_queries, k), MISSING_KEY, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    out_keys[:, :width], out_scores[:, :width] = keys, scores
    return out_keys, out_scores


class ApproximateIndex:
    """Search policy shared by the approximate backends.

    A selective filter is answered by an exact scan of the matching vectors;
    a broad one by the approximate structure with the filter; if that finds
    fewer than k matches (or none at all), the exact scan answers instead.
    So a filtered search always returns min(k, matches) results.
    """

    dim: int

    def __len__(self) -> int:
        raise NotImplementedError

    def contains(self, key: int) -> bool:
        raise NotImplementedError

    def keys(self) -> np.ndarray:
        raise NotImplementedError

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def approximate(self, queries: np.ndarray, k: int, accept: set | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Up to k (keys, scores) per query, best first, or None if it could not find k."""
        raise NotImplementedError

    def exact(self, queries: np.ndarray, k: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(keys) == 0:
            return top_k(np.zeros((len(queries), 0), np.float32), keys, k)
        scores = np.concatenate(
            [queries @ self.vectors_for(keys[start : start + 65536]).T for start in range(0, len(keys), 65536)], axis=1)
        return top_k(scores, keys, k)

    def search(self, queries, k: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        if allowed is None:
            take = min(k, len(self))
            if take == 0:
                return pad(np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32), k)
            found = self.approximate(queries, take, None)
            return pad(*found, k) if found is not None else self.exact(queries, k, self.keys())
        allowed_keys = np.asarray([key for key in as_keys(allowed).tolist() if self.contains(key)], dtype=np.int64)
        if len(allowed_keys) <= EXACT_FILTER_MAX_ROWS:
            return self.exact(queries, k, allowed_keys)
        found = self.approximate(queries, min(k, len(allowed_keys)), set(allowed_keys.tolist()))
        return pad(*found, k) if found is not None else self.exact(queries, k, allowed_keys)
