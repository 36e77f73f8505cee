"""pgvector as an index backend: the vectors and their filterable fields (category, price) in a PostgreSQL
table with an HNSW index on inner product, next to a PostgreSQL catalogue (by default in the same database).

Filters are SQL. With pgvector's default ``hnsw.iterative_scan = off`` a filtered query returns fewer than k rows
whenever the first ``ef_search`` candidates hold too few matches (70 of 200 filtered queries here); every search
sets ``strict_order``, so the scan goes on until k match, in order.

Like the Milvus server, the table is shared: several search servers read and write it at once, and each sees
the others' changes at their next query. The HNSW index is created once the first batch is in (a bulk build
is several times faster than growing the graph row by row).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.index.base import MISSING_KEY, VectorIndex, as_keys, filter_rows, read_meta, top_k, write_meta
from lookalike.pg import CONNECT_TIMEOUT_SECONDS, connection_pool, unavailable_as_error, without_credentials

BATCH_ROWS = 1000
COUNT_REUSE_SECONDS = 2.0
BUILD_MEMORY = "1GB"
#: pgvector's ceiling for hnsw.ef_search.
MAX_EF_SEARCH = 1000


def _register_vector(connection) -> None:
    from pgvector.psycopg import register_vector

    register_vector(connection)


class PgvectorIndex(VectorIndex):
    backend = "pgvector"
    native_filters = True
    shared = True

    def __init__(self, dim: int, url: str | None = None, table: str = "lookalike_vectors", m: int = 16,
                 ef_construction: int = 64, ef_search: int = 64, capacity: int = 0, create: bool = True):
        if not url:
            raise LookalikeError("the pgvector index lives in the catalogue's PostgreSQL store: give --store postgresql://...")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
            raise ValueError(f"the pgvector table name {table!r} must be lower-case letters, digits and _")
        self.dim, self.url, self.table = dim, url, table
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        import psycopg

        with self._guard(), psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")  # before the pool's connections load its types
        self._pool = connection_pool(url, 8, "lookalike-pgvector", configure=_register_vector)
        self._graph_ready = False
        self._counted = (-math.inf, 0)
        if create:
            with self._connection() as connection, connection.transaction():
                connection.execute(f"DROP TABLE IF EXISTS {table}")  # a fresh index is rebuilt from the catalogue
                connection.execute(f"CREATE TABLE {table} (key BIGINT PRIMARY KEY, embedding vector({int(dim)}) NOT NULL, "
                                   "category TEXT, price DOUBLE PRECISION)")

    @classmethod
    def attach(cls, dim: int, url: str | None = None, **options) -> PgvectorIndex | None:
        options.pop("vector_source", None)
        index = cls(dim, url, create=False, **options)
        if index._dimension() != dim:
            index.close()
            return None
        return index

    def _dimension(self) -> int | None:
        with self._guard(), self._connection() as connection:
            found = connection.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                       "WHERE attrelid = to_regclass(%s) AND attname = 'embedding'", (self.table,)).fetchone()
        return int(found[0][len("vector("):-1]) if found and found[0].startswith("vector(") else None

    def _guard(self):
        return unavailable_as_error(self.url)

    def _connection(self):
        with self._guard():
            return self._pool.connection()

    @classmethod
    def connection_options(cls, settings, home: Path) -> dict:
        """The catalogue's own PostgreSQL store."""
        return {"url": settings.store}

    def _has_graph(self, connection) -> bool:
        return connection.execute("SELECT to_regclass(%s)", (f"{self.table}_hnsw",)).fetchone()[0] is not None

    def ensure_graph(self) -> None:
        if self._graph_ready:
            return
        with self._guard(), self._connection() as connection, connection.transaction():
            if not self._has_graph(connection):
                # pgvector builds far faster when the graph fits in maintenance_work_mem (64 MB by default).
                connection.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
                connection.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_hnsw ON {self.table} USING hnsw "
                                   f"(embedding vector_ip_ops) WITH (m = {int(self.m)}, ef_construction = {int(self.ef_construction)})")
        self._graph_ready = True

    def __len__(self) -> int:
        when, count = self._counted  # every search asks; other servers' changes show within COUNT_REUSE_SECONDS
        if time.monotonic() - when > COUNT_REUSE_SECONDS:
            with self._guard(), self._connection() as connection:
                count = connection.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]
            self._counted = (time.monotonic(), count)
        return count

    def keys(self) -> np.ndarray:
        with self._guard(), self._connection() as connection:
            rows = connection.execute(f"SELECT key FROM {self.table} ORDER BY key").fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def add(self, keys, vectors, fields: list[dict] | None = None) -> None:
        rows = filter_rows(keys, vectors, fields, self.dim)
        statement = (f"INSERT INTO {self.table}(key, embedding, category, price) VALUES (%s, %s, %s, %s) "
                     "ON CONFLICT (key) DO UPDATE SET embedding = excluded.embedding, category = excluded.category, "
                     "price = excluded.price")
        with self._guard(), self._connection() as connection, connection.cursor() as cursor:
            for start in range(0, len(rows), BATCH_ROWS):
                with connection.transaction():
                    cursor.executemany(statement, rows[start : start + BATCH_ROWS])
        self._counted = (-math.inf, 0)

    def remove(self, keys) -> None:
        keys = as_keys(keys)
        if len(keys):
            with self._guard(), self._connection() as connection:
                connection.execute(f"DELETE FROM {self.table} WHERE key = ANY(%s)", (keys.tolist(),))
            self._counted = (-math.inf, 0)

    def _where(self, allowed: np.ndarray | None, conditions, exclude_keys: np.ndarray) -> tuple[str, list]:
        clauses, params = [], []
        if conditions is not None:
            if conditions.category is not None:
                clauses.append("category = %s")
                params.append(conditions.category)
            if conditions.has_price or conditions.min_price is not None or conditions.max_price is not None:
                clauses.append("price IS NOT NULL")
            if conditions.min_price is not None:
                clauses.append("price >= %s")
                params.append(float(conditions.min_price))
            if conditions.max_price is not None:
                clauses.append("price <= %s")
                params.append(float(conditions.max_price))
        if allowed is not None:
            clauses.append("key = ANY(%s)")
            params.append(allowed.tolist())
        if len(exclude_keys):
            clauses.append("key <> ALL(%s)")
            params.append(np.asarray(exclude_keys, np.int64).tolist())
        return (" AND ".join(clauses) or "TRUE"), params

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, conditions,
                exclude_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None and len(allowed) == 0:
            return top_k(np.zeros((len(queries), 0), np.float32), allowed, k)
        self.ensure_graph()
        where, params = self._where(allowed, conditions, exclude_keys)
        statement = (f"SELECT key, embedding <#> %s AS distance FROM {self.table} WHERE {where} "
                     "ORDER BY distance LIMIT %s")
        out_keys = np.full((len(queries), k), MISSING_KEY, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        with self._guard(), self._connection() as connection, connection.transaction():
            connection.execute(f"SET LOCAL hnsw.ef_search = {min(MAX_EF_SEARCH, max(self.ef_search, k))}")
            connection.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            for row, query in enumerate(queries):
                hits = connection.execute(statement, (query, *params, k)).fetchall()
                for column, (key, distance) in enumerate(hits):
                    out_keys[row, column], out_scores[row, column] = key, -distance  # <#> is the negative inner product
        return out_keys, out_scores

    def close(self) -> None:
        self._pool.close()

    def save(self, directory: Path) -> None:
        self.ensure_graph()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_meta(directory, {"backend": self.backend, "dim": self.dim, "database": without_credentials(self.url),
                               "table": self.table, "m": self.m, "ef_construction": self.ef_construction,
                               "ef_search": self.ef_search, "count": len(self)})

    @classmethod
    def load(cls, directory: Path, url: str | None = None, **context) -> PgvectorIndex:
        meta = read_meta(Path(directory))
        if url is None or without_credentials(url) != meta["database"]:
            raise ValueError("the saved index is in another database")
        index = cls(meta["dim"], url, meta["table"], meta["m"], meta["ef_construction"], meta["ef_search"], create=False)
        if index._dimension() != meta["dim"]:
            index.close()
            raise ValueError(f"the pgvector table {meta['table']} is missing or of another dimension")
        return index
