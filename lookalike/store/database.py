"""The two databases a catalogue can live in, behind one small interface the Catalog writes its SQL to.

SQLite (one file in the catalogue folder, the embedded default) and PostgreSQL (``postgresql://...``, through
psycopg 3 and a connection pool, so several search servers share one catalogue). The Catalog's SQL is the
subset both speak, with ``?`` placeholders; the few places they differ are methods here.

Both serialise writers: SQLite's BEGIN IMMEDIATE, PostgreSQL's transaction-scoped advisory lock, so a lot's
read-modify-write of its photos never interleaves with another server's.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lookalike.pg import connection_pool, unavailable_as_error, without_credentials
from lookalike.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS

#: The advisory lock key that serialises catalogue writers on PostgreSQL.
WRITE_LOCK = 0x6C6F6F6B


class SqliteDatabase:
    dialect = "sqlite"
    migrations = SQLITE_MIGRATIONS
    #: A metadata field's value as text: numbers written one way, for comparison with a string.
    json_field_sql = "CAST(json_extract(extra, ?) AS TEXT)"

    def __init__(self, path: Path):
        self.where = str(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")

    @staticmethod
    def json_field_param(name: str) -> str:
        return f'$."{name}"'

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def schema_version(self, db) -> int:
        return db.execute("PRAGMA user_version").fetchone()[0]

    def set_schema_version(self, db, version: int) -> None:
        db.execute(f"PRAGMA user_version = {int(version)}")

    def highest_keys(self, db) -> dict[str, int]:
        """The highest key ever given per table, removed lots included: a key is never given twice."""
        return {name: int(value) for name, value in db.execute("SELECT name, seq FROM sqlite_sequence")}

    def after_copy(self, db, highest: dict[str, int]) -> None:
        """Lots and photos copied in with their keys: new ones are numbered after every key the source gave."""
        for table in ("items", "photos"):
            db.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (highest.get(table, 0), table))

    def integrity_problems(self) -> list[str]:
        with self._lock:
            result = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
            orphans = self._db.execute("PRAGMA foreign_key_check").fetchall()
        problems = [line for line in result if line != "ok"]
        if orphans:
            problems.append(f"{len(orphans)} vectors without an item")
        return problems

    def close(self) -> None:
        with self._lock:
            self._db.close()


@functools.lru_cache(maxsize=512)
def _to_psycopg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresConnection:
    """A pooled psycopg connection that takes the Catalog's ``?`` placeholders."""

    def __init__(self, connection, database: PostgresDatabase):
        self._connection = connection
        self._database = database

    def execute(self, sql: str, params=()):
        with self._database.guard():
            return self._connection.execute(_to_psycopg(sql), params)

    def executemany(self, sql: str, rows) -> None:
        with self._database.guard(), self._connection.cursor() as cursor:
            cursor.executemany(_to_psycopg(sql), list(rows))


class PostgresDatabase:
    dialect = "postgresql"
    migrations = POSTGRES_MIGRATIONS
    json_field_sql = "(extra::jsonb ->> ?)"

    def __init__(self, url: str, pool_size: int = 16):
        self.url = url
        self.where = without_credentials(url)
        self._local = threading.local()
        self._pool = connection_pool(url, pool_size, "lookalike-store")

    @staticmethod
    def json_field_param(name: str) -> str:
        return name

    def guard(self):
        return unavailable_as_error(self.url)

    @contextmanager
    def read(self) -> Iterator[_PostgresConnection]:
        current = getattr(self._local, "transaction", None)
        if current is not None:  # a read inside this thread's write transaction sees its changes
            yield current
            return
        with self.guard(), self._pool.connection() as connection:
            yield _PostgresConnection(connection, self)

    @contextmanager
    def transaction(self) -> Iterator[_PostgresConnection]:
        with self.guard(), self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            wrapped = _PostgresConnection(connection, self)
            self._local.transaction = wrapped
            try:
                yield wrapped
            finally:
                self._local.transaction = None

    def schema_version(self, db) -> int:
        if db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            return 0
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, db, version: int) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(int(version)),))

    def highest_keys(self, db) -> dict[str, int]:
        """The highest key ever given per table, removed lots included: a key is never given twice."""
        found = {}
        for table in ("items", "photos"):
            row = db.execute(f"SELECT last_value, is_called FROM {table}_key_seq").fetchone()
            found[table] = int(row[0]) if row[1] else int(row[0]) - 1
        return found

    def after_copy(self, db, highest: dict[str, int]) -> None:
        """Lots and photos copied in with their keys: new ones are numbered after every key the source gave."""
        for table in ("items", "photos"):
            db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'key'), "
                       f"GREATEST((SELECT MAX(key) FROM {table}), ?, 0) + 1, false)", (highest.get(table, 0),))

    def integrity_problems(self) -> list[str]:
        return []  # foreign keys hold by construction; PostgreSQL checks its own pages

    def close(self) -> None:
        self._pool.close()
