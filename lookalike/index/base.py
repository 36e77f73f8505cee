"""The index contract: what every backend does, and all the engine relies on.

Written down once here (as qdrant-client's ``QdrantBase`` does for its local
and remote clients) so that the engine calls plain methods and never asks a
backend what it can do beyond the capabilities declared below.

- Keys are int64 (the catalogue's item keys); vectors are L2-normalised float32,
  so the inner product is the cosine similarity.
- ``add`` inserts or replaces; ``remove`` forgets (unknown keys are ignored).
- ``search(queries, k, allowed, conditions, exclude_keys)`` returns (keys,
  scores), each (n_queries, k), best first; unused slots hold MISSING_KEY and
  -inf. ``allowed`` restricts the search to those keys; ``exclude_keys`` leaves
  keys out; a filtered search returns ``min(k, matches)`` results.
- ``conditions`` (category and price, an ItemFilter without extra fields) may be
  given only to a backend that declares ``native_filters``: it keeps its own copy
  of those fields, passed to ``add`` as ``fields``, and filters inside its engine.
  Every other backend ignores ``fields`` and is given filters as ``allowed`` keys.
- ``save(directory)`` writes into a fresh folder the caller swaps into place;
  ``load(directory, **context)`` reads it back, or raises ValueError/OSError when
  the saved index is missing, stale or damaged (the caller then rebuilds it from
  the catalogue). ``close()`` releases connections.
- A backend that declares ``needs_stored_vectors`` is given ``vector_source`` (the
  catalogue's stored vectors by key) in its constructor and in ``load``.
- ``connection_options(settings, home)`` says what a backend takes from the
  settings (a server URI and token) and where it keeps files by default.
- A ``shared`` index lives in a server that several search servers use at once
  (a Milvus server, pgvector). ``attach(dim, **context)`` connects to it as it
  is (None when there is none of that dimension); the caller reconciles it with
  the catalogue instead of rebuilding it under the other servers. Its ``keys()``
  and ``len()`` are the server's, whoever wrote them. ``others_wrote()`` tells it
  that another search server has just changed the catalogue, so its next searches
  must see that server's writes (Milvus searches with Strong consistency a while).

``tests/test_index.py`` runs this contract against every backend, with exact
search as the reference.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

MISSING_KEY = -1
VectorSource = Callable[[np.ndarray], np.ndarray]


class VectorIndex(ABC):
    backend: ClassVar[str]
    #: Filters category and price itself (``conditions``), from the ``fields`` given to ``add``.
    native_filters: ClassVar[bool] = False
    #: Re-ranks from the catalogue's stored vectors: takes ``vector_source``.
    needs_stored_vectors: ClassVar[bool] = False
    #: Lives in a server other search servers share (set per instance: Milvus Lite is not shared, a Milvus server is).
    shared: bool = False
    dim: int

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        """Insert vectors; a key already present gets its vector replaced."""

    @abstractmethod
    def remove(self, keys) -> None:
        """Forget keys; unknown keys are ignored."""

    @abstractmethod
    def keys(self) -> np.ndarray: ...

    @abstractmethod
    def save(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, **context) -> VectorIndex: ...

    @classmethod
    def attach(cls, dim: int, **context) -> VectorIndex | None:
        """The shared index as it stands on its server, or None (never for an in-process index)."""
        return None

    @classmethod
    def connection_options(cls, settings, home: Path) -> dict:
        """Constructor options this backend takes from Settings (none by default)."""
        return {}

    def others_wrote(self) -> None:  # noqa: B027 - a no-op by design: most indexes see every write at once
        """Another search server changed the shared catalogue: searches from now on must see its writes."""

    def close(self) -> None:  # noqa: B027 - a no-op by design: an in-process index holds no connection
        """Release connections."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, conditions,
                exclude_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The backend's search; ``exclude_keys`` is non-empty only for a backend with native filters."""

    def search(self, queries, k: int, allowed=None, conditions=None, exclude_keys=()) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        if conditions is not None and not self.native_filters:
            raise ValueError(f"the {self.backend} index filters by allowed keys, not by conditions")
        excluded = as_keys(exclude_keys) if len(exclude_keys) else np.zeros(0, np.int64)
        if allowed is not None:
            allowed = as_keys(allowed)
            if len(excluded):
                allowed = allowed[~np.isin(allowed, excluded)]
            return self._search(queries, k, allowed, conditions, np.zeros(0, np.int64))
        if not len(excluded) or self.native_filters:
            return self._search(queries, k, None, conditions, excluded)
        # Ask for enough more that k remain once the excluded keys are dropped.
        keys, scores = self._search(queries, k + len(excluded), None, None, excluded[:0])
        out_keys = np.full((len(queries), k), MISSING_KEY, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row in range(len(queries)):
            kept = ~np.isin(keys[row], excluded)
            row_keys, row_scores = keys[row][kept][:k], scores[row][kept][:k]
            out_keys[row, : len(row_keys)], out_scores[row, : len(row_scores)] = row_keys, row_scores
        return out_keys, out_scores


def filter_rows(keys, vectors, fields: list[dict] | None, dim: int):
    """For a backend with native filters: (key, vector, category or None, finite price or None) per row, checked."""
    keys, vectors = as_keys(keys), as_vectors(vectors, dim)
    if len(keys) != len(vectors):
        raise ValueError("keys and vectors differ in length")
    rows = []
    for key, vector, extra in zip(keys.tolist(), vectors, fields or [{}] * len(keys)):
        price = extra.get("price")
        rows.append((key, vector, extra.get("category"), float(price) if price is not None and math.isfinite(price) else None))
    return rows


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


class ApproximateIndex(VectorIndex):
    """Search policy shared by the approximate backends.

    A selective filter is answered by an exact scan of the matching vectors;
    a broad one by the approximate structure with the filter; if that finds
    fewer than k matches (or none at all), the exact scan answers instead.
    So a filtered search always returns min(k, matches) results.
    """

    #: A filter matching at most this many items is answered by an exact scan of the matches.
    exact_filter_max_rows = EXACT_FILTER_MAX_ROWS

    def contains(self, key: int) -> bool:
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

    def _search(self, queries, k: int, allowed, conditions, exclude_keys) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            take = min(k, len(self))
            if take == 0:
                return pad(np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32), k)
            found = self.approximate(queries, take, None)
            return pad(*found, k) if found is not None else self.exact(queries, k, self.keys())
        allowed = np.asarray(allowed, dtype=np.int64)
        if len(allowed) <= self.exact_filter_max_rows:
            return self.exact(queries, k, self._known(allowed))
        # Keys the index lacks only make the graph look for more than exist: it then finds fewer, and the scan answers.
        found = self.approximate(queries, min(k, len(allowed)), self.acceptor(allowed))
        return pad(*found, k) if found is not None else self.exact(queries, k, self._known(allowed))

    def acceptor(self, allowed: np.ndarray):
        """What ``approximate`` takes to tell an allowed key: a set of them here."""
        return set(allowed.tolist())

    def _known(self, keys: np.ndarray) -> np.ndarray:
        return keys[np.fromiter((self.contains(key) for key in keys.tolist()), bool, len(keys))]
