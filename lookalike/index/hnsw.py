"""Approximate search with hnswlib's HNSW graph.

Deletes are hnswlib tombstones (``mark_deleted``) whose slots new items
reuse (``allow_replace_deleted``), so the catalogue changes daily without a
rebuild and the graph does not grow with churn.

The vectors are also kept in one contiguous array (rows reused as keys come
and go): a filtered search scans the matching vectors from it at memory speed,
where hnswlib hands them out at about 90 us each. It doubles the vectors'
memory (5 GB at a million 1280-d photos) and makes selective filters cheap
(benchmarks/filter_bench.py). A loaded index reads the array straight out of
hnswlib's saved file.

Once the index holds ``scan_train_size`` vectors it also keeps them projected
onto their top ``SCAN_COMPONENTS`` principal directions (a tenth of the
bytes), and a scan of many matches reads that copy, then re-ranks the best
few hundred exactly from the full one: at a million photos the scan of 10,000
matches reads 5 MB instead of 51.
"""

from __future__ import annotations

import math
from pathlib import Path

import hnswlib
import numpy as np

from lookalike.index.base import ApproximateIndex, as_keys, as_vectors, read_meta, top_k, write_meta

#: The projected copy's width; vectors narrower than 4x this are scanned as they are.
SCAN_COMPONENTS = 128
#: A projected scan re-ranks at least this many of its best matches (and 4k) exactly from the full copy: with
#: 128 of 1280 directions that finds the exact top 10 of up to 40,000 matches at recall@10 >= 0.998 at a million
#: photos (benchmarks/filter_bench.py).
SHORTLIST = 100
#: Keys up to 16x the count and this far above get arrays indexed by key (the row map, a filter's byte mask).
DENSE_KEY_SLACK = 1 << 20

#: hnswlib's saved index starts with these fields (hnswalg.h, saveIndex), then each element's level-0 block.
SAVED_HEADER = np.dtype([("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("element_bytes", "<u8"),
                         ("label_offset", "<u8"), ("data_offset", "<u8"), ("max_level", "<i4"), ("entry_point", "<u4"),
                         ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8")])


class HnswIndex(ApproximateIndex):
    backend = "hnsw"

    @property
    def exact_filter_max_rows(self) -> int:
        """Up to this many matches the scan beats the graph with a filter. The scan's cost grows with the matches;
        the graph's with N / matches (it walks past the photos that fail the filter), so the two meet near sqrt(N)
        times a constant, set where they met in benchmarks/filter_bench.py (the projected scan is about 5x
        cheaper a match than the full one)."""
        factor = 11 if self._projection is None else 40
        return max(4000, int(factor * math.sqrt(len(self))))

    def __init__(self, dim: int, m: int = 16, ef_construction: int = 200, ef_search: int = 64, capacity: int = 1024,
                 keep_vectors: bool = True, scan_train_size: int = 20_000):
        """``keep_vectors=False`` leaves out the contiguous copy (a graph whose owner re-ranks from elsewhere)."""
        self.dim = dim
        self.keep_vectors = keep_vectors
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.scan_train_size = scan_train_size
        self._graph = hnswlib.Index(space="ip", dim=dim)
        self._graph.init_index(max_elements=capacity, M=m, ef_construction=ef_construction, allow_replace_deleted=True)
        self._graph.set_ef(ef_search)
        #: key -> row of ``_vectors`` (-1 without the copy); rows of removed keys wait in ``_free`` for new ones.
        self._rows: dict[int, int] = {}
        self._free: list[int] = []
        self._vectors = np.empty((max(capacity, 1) if keep_vectors else 0, dim), np.float32)
        #: The same rows projected (``_projection``, dim x SCAN_COMPONENTS), once learned; empty before.
        self._projection: np.ndarray | None = None
        self._projected = np.empty((0, SCAN_COMPONENTS), np.float32)
        self._fitted_at = 0
        #: ``_rows`` as an array indexed by key (-1: absent), kept while keys stay dense: a filter of 10,000 keys
        #: finds its rows in 10 us instead of 1-10 ms of dict lookups.
        self._row_map: np.ndarray | None = np.full(1024, -1, np.int64) if keep_vectors else None
        self._largest_key = 0

    def __len__(self) -> int:
        return len(self._rows)

    def contains(self, key: int) -> bool:
        return key in self._rows

    def keys(self) -> np.ndarray:
        return np.fromiter(sorted(self._rows), dtype=np.int64, count=len(self._rows))

    def _known(self, keys: np.ndarray) -> np.ndarray:
        if self._row_map is None:
            return super()._known(keys)
        inside = keys[(keys >= 0) & (keys < len(self._row_map))]
        return inside[self._row_map[inside] >= 0]

    def _rows_of(self, keys: np.ndarray) -> np.ndarray:
        if self._row_map is not None:
            keys = np.asarray(keys, np.int64)
            rows = self._row_map[np.clip(keys, 0, len(self._row_map) - 1)]
            if len(keys) and ((rows < 0) | (keys < 0) | (keys >= len(self._row_map))).any():
                raise KeyError("a key the index does not hold")
            return rows
        return np.fromiter((self._rows[key] for key in np.asarray(keys).tolist()), np.int64, len(keys))

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        if not self.keep_vectors:
            return np.asarray(self._graph.get_items(keys), dtype=np.float32).reshape(len(keys), self.dim)
        return self._vectors[self._rows_of(keys)]

    def exact(self, queries: np.ndarray, k: int, keys: np.ndarray):
        """The best k of ``keys`` from the copy: scanned whole, or through the projected copy with the best
        shortlist re-ranked exactly (the scores returned are exact either way)."""
        if len(keys) == 0 or not self.keep_vectors:
            return super().exact(queries, k, keys)
        rows = self._rows_of(keys)
        order = np.argsort(rows)  # in row order the scan reads the array front to back
        rows, keys = rows[order], keys[order]
        shortlist = max(SHORTLIST, 4 * k)
        if self._projection is not None and len(rows) > 4 * shortlist:
            projected = queries @ self._projection
            rough = np.concatenate([projected @ self._projected[rows[start : start + 65536]].T
                                    for start in range(0, len(rows), 65536)], axis=1)
            # One exact pass over the union of every query's shortlist (a query's views share most of theirs).
            best = np.unique(np.argpartition(-rough, shortlist - 1, axis=1)[:, :shortlist])
            rows, keys = rows[best], keys[best]
        scores = np.concatenate([queries @ self._vectors[rows[start : start + 65536]].T
                                 for start in range(0, len(rows), 65536)], axis=1)
        return top_k(scores, keys, k)

    def _grow(self, needed: int) -> None:
        size = len(self._vectors)
        while size < needed:
            size *= 2
        if size > len(self._vectors):
            grown = np.empty((size, self.dim), np.float32)
            grown[: len(self._vectors)] = self._vectors
            self._vectors = grown
        if self._projection is not None and len(self._projected) < size:
            projected = np.empty((size, SCAN_COMPONENTS), np.float32)
            projected[: len(self._projected)] = self._projected
            self._projected = projected

    def _dense(self, largest_key: int) -> bool:
        """Whether keys up to ``largest_key`` are few enough past the count to index an array by."""
        return largest_key <= 16 * len(self._rows) + DENSE_KEY_SLACK

    def _map_rows(self, keys: np.ndarray, rows) -> None:
        if self._row_map is None:
            return
        if (len(keys) and int(keys.min()) < 0) or not self._dense(self._largest_key):
            self._row_map = None  # sparse keys: the dict alone
            return
        if self._largest_key >= len(self._row_map):
            grown = np.full(max(self._largest_key + 1, 2 * len(self._row_map)), -1, np.int64)
            grown[: len(self._row_map)] = self._row_map
            self._row_map = grown
        self._row_map[keys] = rows

    def _fit_projection(self) -> None:
        """Learn the principal directions from up to 20,000 of the vectors and project every row. Refitted each
        time the index has doubled since, so a catalogue whose photos drift keeps a projection that fits them."""
        used = np.fromiter(self._rows.values(), np.int64, len(self._rows))
        sample = self._vectors[np.sort(np.random.default_rng(0).choice(used, min(len(used), 20_000), replace=False))]
        # Not centred: the scan ranks by inner product, which the uncentred second moments preserve.
        _, directions = np.linalg.eigh(sample.T @ sample)
        self._projection = np.ascontiguousarray(directions[:, ::-1][:, :SCAN_COMPONENTS].astype(np.float32))
        self._project_all()
        self._fitted_at = len(self._rows)

    def _project_all(self) -> None:
        end = len(self._rows) + len(self._free)  # rows beyond have never been used
        self._projected = np.empty((len(self._vectors), SCAN_COMPONENTS), np.float32)
        for start in range(0, end, 65536):
            stop = min(start + 65536, end)
            self._projected[start:stop] = self._vectors[start:stop] @ self._projection

    def _store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._largest_key = max(self._largest_key, int(keys.max()))
        if not self.keep_vectors:
            self._rows.update(dict.fromkeys(keys.tolist(), -1))
            return
        rows = []
        for key in keys.tolist():
            row = self._rows.get(key)
            if row is None:
                # no free row: every row in use belongs to a key, so the next new one follows them
                row = self._free.pop() if self._free else len(self._rows)
                self._rows[key] = row
            rows.append(row)
        self._grow(len(self._rows) + len(self._free))
        self._vectors[rows] = vectors
        self._map_rows(keys, rows)
        if self._projection is not None:
            self._projected[rows] = vectors @ self._projection
        if (self.dim >= 4 * SCAN_COMPONENTS and len(self._rows) >= self.scan_train_size
                and len(self._rows) >= 2 * self._fitted_at):
            self._fit_projection()

    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        keys, vectors = as_keys(keys), as_vectors(vectors, self.dim)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        if len(keys) == 0:
            return
        needed = self._graph.get_current_count() + len(keys)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        present = np.asarray([key in self._rows for key in keys.tolist()])
        if not present.all() and self._graph.get_current_count() > len(self._rows):
            # A removed key may still own its old slot, marked deleted: it comes back there. (Given to
            # replace_deleted it could land in another key's free slot while its old slot keeps its label,
            # and hnswlib would drop the key when that old slot is reused.)
            for position in np.flatnonzero(~present).tolist():
                try:
                    self._graph.unmark_deleted(int(keys[position]))
                except RuntimeError:  # not in the graph at all, or its slot went to another key
                    continue
                present[position] = True
        if present.any():
            # Replacing in place keeps the key's slot; hnswlib updates the links.
            self._graph.add_items(vectors[present], keys[present], replace_deleted=False)
        if (~present).any():
            self._graph.add_items(vectors[~present], keys[~present], replace_deleted=True)
        self._store(keys, vectors)

    def remove(self, keys) -> None:
        for key in as_keys(keys).tolist():
            if key in self._rows:
                self._graph.mark_deleted(key)
                row = self._rows.pop(key)
                if row >= 0:
                    self._free.append(row)
                    if self._row_map is not None:
                        self._row_map[key] = -1

    def acceptor(self, allowed: np.ndarray):
        """A byte per key (1: allowed) where the keys are small enough: for a broad filter, building a set of
        200,000 keys took longer than the graph search itself (10 ms against 1.5 ms at a million photos)."""
        largest = max(self._largest_key, int(allowed.max()) if len(allowed) else 0)
        if len(allowed) < 4096 or allowed.min() < 0 or not self._dense(largest):
            return set(allowed.tolist())
        mask = np.zeros(largest + 1, np.uint8)
        mask[allowed] = 1
        return bytearray(mask)

    def approximate(self, queries: np.ndarray, k: int, accept: set | bytearray | None):
        self._graph.set_ef(max(self.ef_search, k))
        allowed = None if accept is None else accept.__getitem__ if isinstance(accept, bytearray) else accept.__contains__
        try:
            labels, distances = self._graph.knn_query(queries, k=k, filter=allowed, num_threads=1)
        except RuntimeError:  # hnswlib found fewer than k: too few reachable matches
            return None
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._graph.save_index(str(directory / "hnsw.bin"))
        np.save(directory / "live.npy", self.keys())
        if self._projection is not None:
            np.save(directory / "projection.npy", self._projection)
        write_meta(
            directory,
            {"backend": self.backend, "dim": self.dim, "m": self.m, "ef_construction": self.ef_construction,
             "ef_search": self.ef_search, "count": len(self), "keep_vectors": self.keep_vectors,
             "scan_train_size": self.scan_train_size, "projection_fitted_at": self._fitted_at},
        )

    @classmethod
    def load(cls, directory: Path, **context) -> HnswIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        index = cls(meta["dim"], meta["m"], meta["ef_construction"], meta["ef_search"], capacity=1,
                    keep_vectors=meta.get("keep_vectors", True), scan_train_size=meta.get("scan_train_size", 20_000))
        index._graph = hnswlib.Index(space="ip", dim=meta["dim"])
        index._graph.load_index(str(directory / "hnsw.bin"), allow_replace_deleted=True)
        index._graph.set_ef(meta["ef_search"])
        live = np.load(directory / "live.npy")
        if len(live) != meta["count"]:
            raise ValueError("index files are inconsistent")
        if not index.keep_vectors:
            index._store(live, np.zeros((0, meta["dim"]), np.float32))
            return index
        index._vectors = np.empty((max(len(live), 1), meta["dim"]), np.float32)
        if meta.get("projection_fitted_at"):  # the projection it had, so a restart keeps its answers
            index._projection = np.load(directory / "projection.npy")
            index._fitted_at = meta["projection_fitted_at"]
        index._store(live, _saved_vectors(directory / "hnsw.bin", live, meta["dim"], index._graph))
        return index


def _saved_vectors(path: Path, keys: np.ndarray, dim: int, graph) -> np.ndarray:
    """The vectors of ``keys`` read from hnswlib's saved file (each element's block holds its vector and its label),
    or asked of hnswlib one by one if the file is not laid out as expected."""
    with open(path, "rb") as handle:
        header = np.frombuffer(handle.read(SAVED_HEADER.itemsize), SAVED_HEADER)
    if len(header) == 1:
        count, element_bytes = int(header["count"][0]), int(header["element_bytes"][0])
        data_offset, label_offset = int(header["data_offset"][0]), int(header["label_offset"][0])
        if data_offset + 4 * dim <= label_offset and label_offset + 8 <= element_bytes and count >= len(keys):
            blocks = np.memmap(path, np.uint8, "r", offset=SAVED_HEADER.itemsize, shape=(count, element_bytes))
            labels = blocks[:, label_offset : label_offset + 8].copy().view("<u8").ravel().astype(np.int64)
            # The third byte of an element's links header holds hnswlib's delete mark: a deleted slot may still
            # carry the label of a key that lives elsewhere now.
            deleted = (blocks[:, int(header["offset_level0"][0]) + 2] & 1).astype(bool)
            position = {label: row for row, (label, gone) in enumerate(zip(labels.tolist(), deleted.tolist())) if not gone}
            if all(key in position for key in keys.tolist()):
                rows = np.fromiter((position[key] for key in keys.tolist()), np.int64, len(keys))
                vectors = blocks[rows, data_offset : data_offset + 4 * dim].copy().view("<f4")
                del blocks
                return vectors.reshape(len(keys), dim)
    return np.asarray(graph.get_items(keys), dtype=np.float32).reshape(len(keys), dim)
