"""Milvus as an index backend (pymilvus): vectors plus the filterable fields
(category, price) in a Milvus collection with an HNSW index on inner product.

The SQLite catalogue stays the source of truth. The engine writes an item to
SQLite first, then to Milvus; the index folder's state.json records the
catalogue's change counter the collection matches, and a collection that is
missing, stale or of another size is dropped and rebuilt from SQLite (so a
crash between the two writes heals on the next start). Milvus holds no
metadata that SQLite lacks, so SQLite is never rebuilt from it.

A local file URI (``./milvus.db``) runs Milvus Lite embedded; ``http://host:19530``
(and a token) points at a Milvus server or cluster: the client API is the same.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from lookalike.errors import ErrorKind, LookalikeError
from lookalike.index.base import MISSING_KEY, VectorIndex, as_keys, filter_rows, read_meta, top_k, write_meta

FILTER_IN_LIST_MAX = 5000
BATCH_ROWS = 2000
#: A Milvus server applies a delete to searches a little later, even for the client that sent it (a Milvus
#: 2.3.5 server returned a row just deleted by the same Session client); removed keys are left out by the
#: search expression for this long, after which any consistency level sees the delete.
DELETE_SETTLE_SECONDS = 60.0
#: How long a shared collection's row count is reused (searches bound their candidate counts by it).
COUNT_REUSE_SECONDS = 2.0
#: After another search server's change is noticed, searches use Strong consistency this long. A Session search
#: sees only this client's own writes at once; another client's appear when the query node has consumed them
#: (under load, more than a second on a Milvus 2.3.5 server). A Strong search waits for the time tick (about
#: 200 ms) and sees everything written before it began; the other server writes to Milvus right after its store
#: commit, well inside this window.
STRONG_AFTER_OTHERS_WROTE_SECONDS = 5.0


def _client(uri: str, token: str | None) -> _Guarded:
    try:
        from pymilvus import MilvusClient
    except ImportError as error:
        raise RuntimeError("the milvus backend needs pymilvus: pip install -e '.[milvus]'") from error
    # pymilvus logs each failed reconnection with a traceback; the failure reaches the user once, as _Guarded's error.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    return _Guarded(MilvusClient, uri, token)


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() if parts.hostname else uri


class _Guarded:
    """The Milvus client, whose failures (server down, unreachable, refusing) come out as one clear error of
    kind UNAVAILABLE (the CLI's exit 3, the API's 503), naming the server without its credentials."""

    def __init__(self, client_class, uri: str, token: str | None):
        self._where = _without_credentials(uri)
        self._client = self._call(client_class, uri=uri, token=token or "")

    def _call(self, function, *args, **kwargs):
        from pymilvus.exceptions import MilvusException

        try:
            return function(*args, **kwargs)
        except MilvusException as error:
            message = str(getattr(error, "message", "") or error).splitlines()[0][:300]
            kind = _NotLoaded if "not loaded" in message else LookalikeError
            raise kind(f"Milvus at {self._where} is unavailable: {message}", ErrorKind.UNAVAILABLE) from None

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute
        return lambda *args, **kwargs: self._call(attribute, *args, **kwargs)


class _NotLoaded(LookalikeError):
    """A restarted Milvus server has the collection but has not loaded it for search yet."""


def _quote(text: str) -> str:
    return json.dumps(text)  # a double-quoted string with escapes, as Milvus expressions take them


def filter_expression(conditions=None, exclude_keys=()) -> str:
    """Category and price conditions (an ItemFilter, or anything with its attributes) and keys to leave
    out, as a Milvus boolean expression."""
    clauses = []
    if conditions is not None:
        if conditions.category is not None:
            clauses.append(f"category == {_quote(conditions.category)}")
        if conditions.has_price or conditions.min_price is not None or conditions.max_price is not None:
            clauses.append("has_price == true")
        if conditions.min_price is not None:
            clauses.append(f"price >= {float(conditions.min_price)!r}")
        if conditions.max_price is not None:
            clauses.append(f"price <= {float(conditions.max_price)!r}")
    if len(exclude_keys):
        clauses.append(f"key not in [{','.join(str(int(key)) for key in exclude_keys)}]")
    return " and ".join(clauses)


class MilvusIndex(VectorIndex):
    backend = "milvus"
    native_filters = True

    def __init__(self, dim: int, uri: str = "milvus.db", token: str | None = None, collection: str = "lookalike",
                 m: int = 16, ef_construction: int = 200, ef_search: int = 64, capacity: int = 0, create: bool = True):
        from pymilvus import DataType

        self.dim = dim
        self.uri = uri
        self.token = token
        self.collection = collection
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self._client = _client(self.uri, self.token)
        #: A Milvus server may be shared by several search servers; Milvus Lite (a local file) never is.
        self.shared = urlsplit(uri).scheme in ("http", "https", "tcp", "grpc")
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._counted = (-math.inf, 0)  # (when, rows) of the last count of a shared collection
        self._recently_removed: dict[int, float] = {}  # key -> when
        self._strong_until = -math.inf
        if not create:
            return
        if self._client.has_collection(collection):
            self._client.drop_collection(collection)  # a fresh index is rebuilt from the catalogue
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("category", DataType.VARCHAR, max_length=512)
        schema.add_field("price", DataType.DOUBLE)
        schema.add_field("has_price", DataType.BOOL)
        index_params = self._client.prepare_index_params()
        index_params.add_index("vector", index_type="HNSW", metric_type="IP",
                               params={"M": m, "efConstruction": ef_construction})
        # Session: a search sees this client's own writes at once, without waiting for the time tick as Strong does.
        self._client.create_collection(collection, schema=schema, index_params=index_params, consistency_level="Session")

    @classmethod
    def connection_options(cls, settings, home: Path) -> dict:
        """The server (or Milvus Lite file, by default in the catalogue folder) and its token."""
        return {"uri": settings.milvus_uri or str(Path(home) / "milvus.db"), "token": settings.milvus_token}

    @classmethod
    def attach(cls, dim: int, uri: str = "milvus.db", token: str | None = None, collection: str = "lookalike",
               **options) -> MilvusIndex | None:
        options.pop("vector_source", None)
        if urlsplit(uri).scheme not in ("http", "https", "tcp", "grpc"):
            return None
        index = cls(dim, uri, token, collection, create=False, **options)
        if not index._client.has_collection(collection) or index._collection_dim() != dim:
            index.close()
            return None
        index._client.load_collection(collection)
        index._live = set(index._server_keys().tolist())
        return index

    def _collection_dim(self) -> int | None:
        for described in self._client.describe_collection(self.collection).get("fields", []):
            if described.get("name") == "vector":
                return int(described.get("params", {}).get("dim", 0))
        return None

    def _server_keys(self) -> np.ndarray:
        keys = []
        with self._lock:
            found = self._client.query_iterator(self.collection, batch_size=BATCH_ROWS * 5, filter="key >= 0",
                                                output_fields=["key"], consistency_level="Strong")
            while batch := found.next():
                keys.extend(int(row["key"]) for row in batch)
            found.close()
        return np.asarray(sorted(keys), dtype=np.int64)

    def __len__(self) -> int:
        if not self.shared:
            return len(self._live)
        # Every search asks for the size; a shared server's count(*) waits for the time tick, so it is reused briefly.
        when, count = self._counted
        if time.monotonic() - when > COUNT_REUSE_SECONDS:
            count = self._count()
            self._counted = (time.monotonic(), count)
        return count

    def keys(self) -> np.ndarray:
        """The keys in the collection: on a shared server, whoever wrote them."""
        if self.shared:
            return self._server_keys()
        return np.fromiter(sorted(self._live), dtype=np.int64, count=len(self._live))

    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        rows = [{"key": key, "vector": vector.tolist(), "category": (category or "")[:512],
                 "price": price if price is not None else 0.0, "has_price": price is not None}
                for key, vector, category, price in filter_rows(keys, vectors, fields, self.dim)]
        with self._lock:
            for start in range(0, len(rows), BATCH_ROWS):
                self._client.upsert(self.collection, rows[start : start + BATCH_ROWS])
            self._live.update(row["key"] for row in rows)
            self._counted = (-math.inf, 0)

    def remove(self, keys) -> None:
        # On a shared server another search server may have added keys this one never saw: delete them all.
        present = [key for key in as_keys(keys).tolist() if self.shared or key in self._live]
        if not present:
            return
        with self._lock:
            self._client.delete(self.collection, ids=present)
            self._live.difference_update(present)
            self._counted = (-math.inf, 0)
            now = time.monotonic()
            self._recently_removed.update((key, now) for key in present)

    def others_wrote(self) -> None:
        self._strong_until = time.monotonic() + STRONG_AFTER_OTHERS_WROTE_SECONDS
        self._counted = (-math.inf, 0)

    def _read_consistency(self) -> dict:
        """What a search or query passes: Strong for a while after another server's change, else the collection's."""
        return {"consistency_level": "Strong"} if time.monotonic() < self._strong_until else {}

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, conditions,
                exclude_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Conditions (category, price) and excluded keys are evaluated inside Milvus."""
        expression = filter_expression(conditions, np.concatenate([np.asarray(exclude_keys, np.int64),
                                                                   self._unsettled_removals()]))
        clauses = [expression] if expression else []
        if allowed is not None:
            if len(allowed) == 0:
                return top_k(np.zeros((len(queries), 0), np.float32), allowed, k)
            if len(allowed) > FILTER_IN_LIST_MAX:
                # A key list this long makes a slow expression; scan the allowed vectors instead.
                return self._exact(queries, k, allowed, expression)
            clauses.append(f"key in [{','.join(map(str, allowed.tolist()))}]")
        request = {"data": [query.tolist() for query in queries], "limit": k, "output_fields": ["key"],
                   "filter": " and ".join(f"({clause})" for clause in clauses),
                   "search_params": {"metric_type": "IP", "params": {"ef": max(self.ef_search, k)}}}
        request.update(self._read_consistency())
        with self._lock:
            try:
                results = self._client.search(self.collection, **request)
            except _NotLoaded:  # the server was restarted under us: load the collection, then search
                self._client.load_collection(self.collection)
                results = self._client.search(self.collection, **request)
        out_keys = np.full((len(queries), k), MISSING_KEY, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, hits in enumerate(results):
            for column, hit in enumerate(list(hits)[:k]):
                out_keys[row, column] = int(hit["key"] if "key" in hit else hit["id"])
                out_scores[row, column] = float(hit["distance"])
        return out_keys, out_scores

    def _count(self) -> int:
        """The rows the collection holds now. (A server's row_count statistic still counts deleted and replaced
        rows until compaction; count(*) does not.)"""
        with self._lock:
            found = self._client.query(self.collection, filter="key >= 0", output_fields=["count(*)"],
                                       consistency_level="Strong")
        return int(found[0]["count(*)"]) if found else 0

    def _unsettled_removals(self) -> np.ndarray:
        with self._lock:
            settled = time.monotonic() - DELETE_SETTLE_SECONDS
            for key in [key for key, when in self._recently_removed.items() if when < settled]:
                del self._recently_removed[key]
            return np.fromiter((key for key in self._recently_removed if key not in self._live), np.int64)

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray, expression: str):
        keys, vectors = [], []
        with self._lock:
            for start in range(0, len(allowed), BATCH_ROWS):
                chunk = allowed[start : start + BATCH_ROWS].tolist()
                clause = f"key in [{','.join(map(str, chunk))}]" + (f" and ({expression})" if expression else "")
                for row in self._client.query(self.collection, filter=clause, output_fields=["key", "vector"],
                                              **self._read_consistency()):
                    keys.append(int(row["key"]))
                    vectors.append(row["vector"])
        if not keys:
            return top_k(np.zeros((len(queries), 0), np.float32), np.zeros(0, np.int64), k)
        return top_k(queries @ np.asarray(vectors, np.float32).T, np.asarray(keys, np.int64), k)

    def close(self) -> None:
        self._client.close()

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if hasattr(self._client, "flush"):
                self._client.flush(self.collection)
        np.save(directory / "live.npy", self.keys())
        write_meta(directory, {"backend": self.backend, "dim": self.dim, "uri": self.uri, "collection": self.collection,
                               "m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                               "count": len(self)})

    @classmethod
    def load(cls, directory: Path, uri: str | None = None, token: str | None = None, **context) -> MilvusIndex:
        directory = Path(directory)
        meta = read_meta(directory)
        if uri is not None and uri != meta["uri"]:
            raise ValueError("the saved index is in another Milvus")
        index = cls(meta["dim"], meta["uri"], token, meta["collection"], meta["m"], meta["ef_construction"],
                    meta["ef_search"], create=False)
        if not index._client.has_collection(index.collection):
            raise ValueError("the Milvus collection is missing")
        index._client.load_collection(index.collection)
        index._live = set(np.load(directory / "live.npy").tolist())
        rows = index._count()
        if rows != len(index._live) or rows != meta["count"]:
            raise ValueError("the Milvus collection does not match the saved index")
        return index
