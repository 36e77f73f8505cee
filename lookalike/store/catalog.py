"""The catalogue: lots (items), their metadata, their photos and the photos' vectors, in one SQLite file
(the default) or a PostgreSQL database (``store="postgresql://..."``) that several servers share.

An item (a lot) has 1..N photos in order, the first its main photo; each photo
has a vector per model. The vector index is keyed by photo, searches group
photos back into lots.

SQLite in WAL mode with synchronous=FULL (or PostgreSQL, fsync on): a write is
durable once its transaction commits, and a crash at any moment leaves the last
committed state. The schema carries an explicit version and is brought up to
date by ordered migrations (store/schema.py) when a catalogue is opened.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.pg import is_database_url
from lookalike.store.database import PostgresDatabase, SqliteDatabase
from lookalike.store.filter_columns import FilterColumns
from lookalike.store.schema import SCHEMA_VERSION, SQLITE_MIGRATIONS, TABLES

DATABASE_NAME = "catalog.sqlite"

MIGRATIONS = SQLITE_MIGRATIONS


class CatalogError(LookalikeError):
    """A problem with the catalogue the user can act on; the message says how."""


class ModelMismatchError(CatalogError):
    pass


@dataclass
class Photo:
    """One photo of a lot: where it is, the file state it was embedded from, and its key in the index."""

    path: str | None
    source_size: int | None = None
    source_mtime_ns: int | None = None
    key: int | None = None
    position: int = 0


@dataclass
class Item:
    id: str
    image_path: str | None = None
    title: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    sold_at: str | None = None
    extra: dict = field(default_factory=dict)
    source_size: int | None = None
    source_mtime_ns: int | None = None
    key: int | None = None
    #: The lot's photos in order, the main one first (filled when read from the catalogue).
    photos: list[Photo] = field(default_factory=list)

    def public_dict(self) -> dict:
        return {
            "id": self.id, "title": self.title, "category": self.category, "price": self.price,
            "currency": self.currency, "sold_at": self.sold_at, "image_path": self.image_path, "extra": self.extra,
        }


@dataclass
class LotChange:
    """What a write did to one lot's photos: those added with their vectors, and the keys removed."""

    item_key: int
    added: list[tuple[int, np.ndarray]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ItemFilter:
    """Metadata conditions; all given ones must hold."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    has_price: bool = False
    fields: tuple[tuple[str, str], ...] = ()
    #: Only lots sold before this date (ISO, compared as text): pricing a sale from earlier ones.
    sold_before: str | None = None

    def is_empty(self) -> bool:
        return (self.category is None and self.min_price is None and self.max_price is None
                and not self.has_price and not self.fields and self.sold_before is None)

    def sql(self, database=SqliteDatabase) -> tuple[str, list]:
        clauses, params = [], []
        if self.category is not None:
            clauses.append("category = ?")
            params.append(self.category)
        if self.min_price is not None:
            clauses.append("price >= ?")
            params.append(self.min_price)
        if self.max_price is not None:
            clauses.append("price <= ?")
            params.append(self.max_price)
        if self.has_price or self.min_price is not None or self.max_price is not None:
            clauses.append("price IS NOT NULL")
        for name, value in self.fields:
            clauses.append(f"{database.json_field_sql} = ?")
            params.extend([database.json_field_param(name), value])
        if self.sold_before is not None:
            clauses.append("sold_at < ?")
            params.append(self.sold_before)
        return (" AND ".join(clauses) or "1=1"), params


#: How often filter columns left behind by another process's writes are read again (SQL answers meanwhile).
COLUMNS_REREAD_SECONDS = 10.0

_PUT_VECTOR = ("INSERT INTO photo_vectors(photo_key, model_id, vector) VALUES(?,?,?) "
               "ON CONFLICT(photo_key, model_id) DO UPDATE SET vector = excluded.vector")
_ITEM_COLUMNS = "key, id, image_path, title, category, price, currency, sold_at, extra, source_size, source_mtime_ns"


def _row_to_item(row) -> Item:
    return Item(
        key=row[0], id=row[1], image_path=row[2], title=row[3], category=row[4], price=row[5], currency=row[6],
        sold_at=row[7], extra=json.loads(row[8] or "{}"), source_size=row[9], source_mtime_ns=row[10],
    )


class Catalog:
    """One catalogue: its folder (saved index, uploaded photos) and its store, the folder's SQLite file or
    the PostgreSQL database at ``store``. Safe to share between threads."""

    def __init__(self, directory: str | Path, create: bool = True, store: str | None = None):
        self.directory = Path(directory)
        if is_database_url(store):
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = PostgresDatabase(store)
        elif store:
            raise CatalogError(f"the store must be a postgresql:// URL (or left out for SQLite in the folder), not {store!r}")
        else:
            path = self.directory / DATABASE_NAME
            if not path.exists() and not create:
                raise CatalogError(f"no catalogue at {self.directory} (run `lookalike index` or `lookalike demo` first)")
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._db = SqliteDatabase(path)
            except (OSError, sqlite3.Error) as error:
                raise CatalogError(f"cannot open catalogue at {self.directory}: {error}") from None
        self.store = self._db.where
        #: Other processes may write to this store (PostgreSQL): a server's own index must follow their changes.
        self.shared = self._db.dialect == "postgresql"
        #: The lots' filterable fields in memory (SQLite only), built on the first filtered search.
        self._columns: FilterColumns | None = None
        self._columns_usable = not self.shared
        self._columns_reading = False
        self._columns_read_at = -math.inf
        #: Taken by a write before it commits and held until its change is in the columns; never held while
        #: waiting for the database (a write holds the database, then this: the other order would deadlock).
        self._columns_lock = threading.Lock()
        self._migrate(create)

    def close(self) -> None:
        self._db.close()

    # -- schema -----------------------------------------------------------------
    def _migrate(self, create: bool) -> None:
        with self.transaction() as db:
            version = self._db.schema_version(db)
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalogue schema version {version} is newer than this lookalike understands ({SCHEMA_VERSION}); upgrade lookalike"
                )
            if version == 0 and not create:
                raise CatalogError(f"no catalogue in {self.store} (run `lookalike index` or `lookalike migrate-store` first)")
            for number in range(version, SCHEMA_VERSION):
                for statement in self._db.migrations[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
                self._db.set_schema_version(db, number + 1)

    @property
    def schema_version(self) -> int:
        with self._db.read() as db:
            return self._db.schema_version(db)

    @contextmanager
    def transaction(self) -> Iterator:
        with self._db.transaction() as db:
            yield db

    # -- meta -------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._db.read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            self._set_meta(db, key, value)

    def _set_meta(self, db, key: str, value: str) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def model_id(self) -> str | None:
        return self.get_meta("model_id")

    @property
    def generation(self) -> int:
        """Bumped by every committed change; a saved index records the one it saw."""
        return int(self.get_meta("generation", "0"))

    @contextmanager
    def _write(self) -> Iterator[tuple]:
        """A write transaction that keeps the filter columns in step: the body lists the lots it touched."""
        touched: list[int] = []
        holding = False
        try:
            with self.transaction() as db:
                yield db, touched
                self._columns_lock.acquire()  # so no search adds a field column between reading and applying
                holding = True
                columns = self._columns
                changes = columns.changes(db, touched) if columns is not None else None
            if changes is not None:
                try:
                    columns.apply(changes)  # if another write came between, they are read afresh
                except Exception:  # noqa: BLE001 - the write is committed: the columns are read afresh instead
                    self._columns = None
        finally:
            if holding:
                self._columns_lock.release()

    def _bump(self, db) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)"
        )

    def check_model(self, model_id: str) -> None:
        current = self.model_id
        if current is not None and current != model_id and self.count_vectors(current) > 0:
            raise ModelMismatchError(
                f"this catalogue holds vectors of model {current}, not {model_id}: "
                f"run `lookalike reindex --model {model_id}` to re-embed it, or use --model {current}"
            )

    # -- writes -----------------------------------------------------------------
    def write_lots(self, lots: Iterable[tuple[Item, list[tuple[Photo, np.ndarray | None]] | None]],
                   model_id: str) -> list[LotChange]:
        """Insert or update lots and their photos in one transaction.

        For each lot, ``photos`` is its whole new photo list in order, each with a vector when it was (re)embedded
        or None to keep the stored photo of the same path, size and modification time; stored photos not in the
        list are removed with their vectors. ``photos=None`` changes the metadata only."""
        self.check_model(model_id)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        changes = []
        with self._write() as (db, touched):
            if self.get_meta("model_id") is None or self.count_vectors(self.get_meta("model_id")) == 0:
                self._set_meta(db, "model_id", model_id)
            for item, photos in lots:
                if photos is not None:
                    main = photos[0][0] if photos else Photo(None)
                    item.image_path, item.source_size, item.source_mtime_ns = main.path, main.source_size, main.source_mtime_ns
                row = db.execute(
                    """INSERT INTO items(id, image_path, title, category, price, currency, sold_at, extra,
                                         source_size, source_mtime_ns, added_at)
                       VALUES(?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(id) DO UPDATE SET image_path=excluded.image_path, title=excluded.title,
                         category=excluded.category, price=excluded.price, currency=excluded.currency,
                         sold_at=excluded.sold_at, extra=excluded.extra, source_size=excluded.source_size,
                         source_mtime_ns=excluded.source_mtime_ns
                       RETURNING key""",
                    (item.id, item.image_path, item.title, item.category, item.price, item.currency, item.sold_at,
                     json.dumps(item.extra, ensure_ascii=False, sort_keys=True), item.source_size,
                     item.source_mtime_ns, now),
                ).fetchone()
                item.key = row[0]
                touched.append(item.key)
                change = LotChange(item.key)
                if photos is not None:
                    self._replace_photos(db, item, photos, model_id, change)
                changes.append(change)
            self._bump(db)
        return changes

    def _replace_photos(self, db, item: Item, photos: list[tuple[Photo, np.ndarray | None]],
                        model_id: str, change: LotChange) -> None:
        rows = db.execute("SELECT key, path, source_size, source_mtime_ns FROM photos WHERE item_key = ?", (item.key,)).fetchall()
        stored = {(row[1], row[2], row[3]): row[0] for row in rows}
        by_path = {row[1]: row[0] for row in rows}
        kept = set()
        item.photos = []
        for position, (photo, vector) in enumerate(photos):
            same = stored.get((photo.path, photo.source_size, photo.source_mtime_ns))
            if vector is None and same is not None and same not in kept:
                db.execute("UPDATE photos SET position = ? WHERE key = ?", (position, same))
                photo.key = same
            elif vector is not None and by_path.get(photo.path) not in (None, *kept):
                # The same file embedded again (changed, or another model's vector missing): its key stays.
                photo.key = by_path[photo.path]
                db.execute("UPDATE photos SET position = ?, source_size = ?, source_mtime_ns = ? WHERE key = ?",
                           (position, photo.source_size, photo.source_mtime_ns, photo.key))
            else:
                photo.key = db.execute(
                    "INSERT INTO photos(item_key, position, path, source_size, source_mtime_ns) VALUES(?,?,?,?,?) RETURNING key",
                    (item.key, position, photo.path, photo.source_size, photo.source_mtime_ns)).fetchone()[0]
            if vector is not None:
                db.execute(_PUT_VECTOR,
                           (photo.key, model_id, np.asarray(vector, dtype=np.float32).tobytes()))
                change.added.append((photo.key, np.asarray(vector, np.float32)))
            photo.position = position
            kept.add(photo.key)
            item.photos.append(photo)
        gone = [key for key in stored.values() if key not in kept]
        db.executemany("DELETE FROM photos WHERE key = ?", [(key,) for key in gone])
        change.removed += gone

    def upsert(self, items: Iterable[tuple[Item, np.ndarray | None]], model_id: str) -> list[int]:
        """Items with one photo each (``image_path``) and its vector, or None to change the metadata only."""
        lots = [(item, None if vector is None else [(Photo(item.image_path, item.source_size, item.source_mtime_ns), vector)])
                for item, vector in items]
        return [change.item_key for change in self.write_lots(lots, model_id)]

    def remove(self, ids: Iterable[str]) -> list[Item]:
        """Remove items with their photos and vectors; returns the removed ones, photos filled in."""
        removed = []
        with self._write() as (db, touched):
            for item_id in ids:
                row = db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
                if row is None:
                    continue
                item = _row_to_item(row)
                item.photos = self._photos_of(db, [item.key]).get(item.key, [])
                removed.append(item)
                touched.append(item.key)
                db.execute("DELETE FROM items WHERE key = ?", (row[0],))
            if removed:
                self._bump(db)
        return removed

    def replace_vectors(self, photo_keys: list[int], vectors: np.ndarray, model_id: str) -> None:
        """Store vectors of ``model_id`` beside the current model's (reindex
        fills them in, resumably, then switches)."""
        with self._write() as (db, _):
            db.executemany(
                _PUT_VECTOR,
                [(key, model_id, np.asarray(vector, np.float32).tobytes()) for key, vector in zip(photo_keys, vectors)],
            )
            self._bump(db)

    def switch_model(self, model_id: str) -> None:
        """Make ``model_id`` the catalogue's model and drop other models' vectors."""
        with self._write() as (db, _):
            self._set_meta(db, "model_id", model_id)
            db.execute("DELETE FROM photo_vectors WHERE model_id != ?", (model_id,))
            self._bump(db)

    # -- reads ------------------------------------------------------------------
    def count(self) -> int:
        with self._db.read() as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def count_vectors(self, model_id: str) -> int:
        """Photo vectors of ``model_id``."""
        with self._db.read() as db:
            return db.execute("SELECT COUNT(*) FROM photo_vectors WHERE model_id = ?", (model_id,)).fetchone()[0]

    def _photos_of(self, db, item_keys: list[int]) -> dict[int, list[Photo]]:
        found: dict[int, list[Photo]] = {}
        for start in range(0, len(item_keys), 500):
            chunk = item_keys[start : start + 500]
            rows = db.execute(f"SELECT item_key, key, position, path, source_size, source_mtime_ns FROM photos "
                              f"WHERE item_key IN ({','.join('?' * len(chunk))}) ORDER BY item_key, position", chunk)
            for item_key, key, position, path, size, mtime in rows:
                found.setdefault(item_key, []).append(Photo(path, size, mtime, key, position))
        return found

    def _with_photos(self, items: list[Item]) -> list[Item]:
        with self._db.read() as db:
            photos = self._photos_of(db, [item.key for item in items])
        for item in items:
            item.photos = photos.get(item.key, [])
        return items

    def get(self, item_id: str) -> Item | None:
        with self._db.read() as db:
            row = db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return self._with_photos([_row_to_item(row)])[0] if row else None

    def get_many(self, keys: Iterable[int]) -> dict[int, Item]:
        keys = [int(key) for key in keys]
        found: dict[int, Item] = {}
        with self._db.read() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE key IN ({marks})", chunk):
                    found[row[0]] = _row_to_item(row)
        self._with_photos(list(found.values()))
        return found

    def items(self, item_filter: ItemFilter = ItemFilter()) -> Iterator[Item]:
        where, params = item_filter.sql(self._db)
        with self._db.read() as db:
            rows = db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY key", params).fetchall()
        return iter(self._with_photos([_row_to_item(row) for row in rows]))

    def keys_matching(self, item_filter: ItemFilter) -> np.ndarray:
        """The keys of the items that match."""
        where, params = item_filter.sql(self._db)
        with self._db.read() as db:
            rows = db.execute(f"SELECT key FROM items WHERE {where}", params).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def photo_keys_matching(self, item_filter: ItemFilter) -> np.ndarray:
        """The photo keys of the items that match (the index is keyed by photo), from the filter columns where
        this process holds them, else in SQL."""
        found = self._photo_keys_from_columns(item_filter)
        if found is not None:
            return found
        where, params = item_filter.sql(self._db)
        with self._db.read() as db:
            rows = db.execute(
                f"SELECT photos.key FROM photos JOIN items ON items.key = photos.item_key WHERE {where}", params).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def read_filter_columns(self) -> None:
        """Read the filter columns now (2.5 s at a million lots), on a connection of their own."""
        if not self._columns_usable:
            return
        try:
            try:
                columns = FilterColumns.read(self._db.where)
            except sqlite3.Error:  # unreadable now (the file locked or going away): SQL answers
                return
            with self._columns_lock:
                if columns is None:
                    self._columns_usable = False  # keys too sparse for arrays
                elif self._columns is None or self._columns.generation < columns.generation:
                    self._columns = columns
        finally:
            with self._columns_lock:
                self._columns_reading = False
                self._columns_read_at = time.monotonic()

    def _read_filter_columns_later(self) -> None:
        """One read at a time, in the background, at most every COLUMNS_REREAD_SECONDS: while another process
        keeps writing, filters are answered in SQL rather than re-reading every lot after each of its writes."""
        with self._columns_lock:
            if self._columns_reading or time.monotonic() - self._columns_read_at < COLUMNS_REREAD_SECONDS:
                return
            self._columns_reading = True
        threading.Thread(target=self.read_filter_columns, daemon=True, name="filter-columns").start()

    def _photo_keys_from_columns(self, item_filter: ItemFilter) -> np.ndarray | None:
        """The answer from the filter columns, or None for SQL to give: no columns yet, or behind the store."""
        if not self._columns_usable:
            return None
        generation = self.generation
        with self._columns_lock:
            columns = self._columns
        if columns is None or columns.generation < generation:  # never read, or another process wrote
            self._read_filter_columns_later()
            return None
        for name in {name for name, _ in item_filter.fields} - set(columns.fields):
            field = FilterColumns.read_field(self._db.where, name)
            with self._columns_lock:
                if field is None or self._columns is not columns or not columns.add_field(name, *field):
                    return None  # unreadable, or the catalogue changed meanwhile: SQL answers this once
        with self._columns_lock:
            if self._columns is not columns or not all(name in columns.fields for name, _ in item_filter.fields):
                return None
            return columns.photo_keys_matching(item_filter)

    def photo_owners(self, photo_keys: Iterable[int]) -> dict[int, tuple[int, int]]:
        """photo key -> (item key, position of the photo in its lot)."""
        keys = [int(key) for key in photo_keys]
        found: dict[int, tuple[int, int]] = {}
        with self._db.read() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for key, item_key, position in db.execute(
                        f"SELECT key, item_key, position FROM photos WHERE key IN ({','.join('?' * len(chunk))})", chunk):
                    found[key] = (item_key, position)
        return found

    def vector(self, photo_key: int, model_id: str) -> np.ndarray | None:
        with self._db.read() as db:
            row = db.execute("SELECT vector FROM photo_vectors WHERE photo_key = ? AND model_id = ?",
                                   (photo_key, model_id)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def vectors_for(self, photo_keys: np.ndarray, model_id: str) -> np.ndarray:
        """The vectors of ``photo_keys``, in that order (all must exist)."""
        found = self._vector_bytes(photo_keys, model_id)
        return np.frombuffer(b"".join(found[int(key)] for key in photo_keys), dtype=np.float32).reshape(len(photo_keys), -1)

    def stored_vectors(self, photo_keys: np.ndarray, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of those of ``photo_keys`` that still have a vector, in key order."""
        found = self._vector_bytes(photo_keys, model_id)
        keys = np.asarray(sorted(found), dtype=np.int64)
        return keys, np.frombuffer(b"".join(found[key] for key in keys.tolist()), dtype=np.float32).reshape(len(keys), -1)

    def _vector_bytes(self, photo_keys, model_id: str) -> dict[int, bytes]:
        keys = [int(key) for key in photo_keys]
        found: dict[int, bytes] = {}
        with self._db.read() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(
                    f"SELECT photo_key, vector FROM photo_vectors WHERE model_id = ? AND photo_key IN ({marks})",
                    [model_id, *chunk]))
        return {key: bytes(vector) for key, vector in found.items()}

    def vectors(self, model_id: str, batch_rows: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(photo keys, vectors) in batches, for every photo with a vector of ``model_id``."""
        last = -1
        while True:
            with self._db.read() as db:
                rows = db.execute(
                    "SELECT photo_key, vector FROM photo_vectors WHERE model_id = ? AND photo_key > ? "
                    "ORDER BY photo_key LIMIT ?", (model_id, last, batch_rows),
                ).fetchall()
            if not rows:
                return
            keys = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
            yield keys, vectors
            last = int(keys[-1])

    def photo_keys_with_vector(self, model_id: str) -> np.ndarray:
        """The keys of every photo with a vector of ``model_id``, in order (no vectors read)."""
        with self._db.read() as db:
            rows = db.execute("SELECT photo_key FROM photo_vectors WHERE model_id = ? ORDER BY photo_key",
                              (model_id,)).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def photos_without_vector(self, model_id: str) -> list[tuple[str, Photo]]:
        """(item id, photo) for every photo lacking a vector of ``model_id``."""
        with self._db.read() as db:
            rows = db.execute(
                "SELECT items.id, photos.path, photos.source_size, photos.source_mtime_ns, photos.key, photos.position "
                "FROM photos JOIN items ON items.key = photos.item_key WHERE photos.key NOT IN "
                "(SELECT photo_key FROM photo_vectors WHERE model_id = ?) ORDER BY photos.key", (model_id,)).fetchall()
        return [(row[0], Photo(*row[1:])) for row in rows]

    def items_without_photos(self) -> list[str]:
        with self._db.read() as db:
            rows = db.execute("SELECT id FROM items WHERE key NOT IN (SELECT item_key FROM photos)").fetchall()
        return [row[0] for row in rows]

    def source_states(self) -> dict[str, tuple[str, int | None, int | None]]:
        """photo path -> (item id, size, mtime_ns) for change detection on re-index."""
        with self._db.read() as db:
            rows = db.execute("SELECT photos.path, items.id, photos.source_size, photos.source_mtime_ns "
                                    "FROM photos JOIN items ON items.key = photos.item_key").fetchall()
        return {row[0]: (row[1], row[2], row[3]) for row in rows if row[0]}

    def browse(self, category: str | None, text: str | None, offset: int, limit: int) -> tuple[list[Item], int]:
        clauses, params = [], []
        if category:
            clauses.append("category = ?")
            params.append(category)
        if text:
            clauses.append("(title LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\')")
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params += [pattern, pattern]
        where = " AND ".join(clauses) or "1=1"
        with self._db.read() as db:
            total = db.execute(f"SELECT COUNT(*) FROM items WHERE {where}", params).fetchone()[0]
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY key DESC LIMIT ? OFFSET ?", [*params, limit, offset]
            ).fetchall()
        return self._with_photos([_row_to_item(row) for row in rows]), total

    def category_counts(self) -> list[tuple[str | None, int]]:
        with self._db.read() as db:
            return db.execute(
                "SELECT category, COUNT(*) FROM items GROUP BY category ORDER BY COUNT(*) DESC"
            ).fetchall()

    def copy_to(self, target: Catalog, batch_rows: int = 1000) -> dict[str, int]:
        """Copy this catalogue, keys and vectors as they are (nothing is re-embedded), into an empty store, in
        one transaction: the copy is whole or absent. Returns the rows copied per table."""
        if target.count():
            raise CatalogError(f"{target.store} already holds {target.count()} lots: copy into an empty store")
        copied = {}
        with self._db.read() as source, target.transaction() as out:
            for table, columns in TABLES.items():
                names = ", ".join(columns)
                insert = (f"INSERT INTO {table}({names}) VALUES({','.join('?' * len(columns))})"
                          + (" ON CONFLICT(key) DO UPDATE SET value = excluded.value" if table == "meta" else ""))
                cursor = source.execute(f"SELECT {names} FROM {table} ORDER BY {columns[0]}")
                copied[table] = 0
                while rows := cursor.fetchmany(batch_rows):
                    out.executemany(insert, [tuple(row) for row in rows if table != "meta" or row[0] != "schema_version"])
                    copied[table] += len(rows)
            target._db.after_copy(out, self._db.highest_keys(source))
        target._columns = None  # the copied change counter may be one the target's columns were at
        return copied

    def integrity_problems(self) -> list[str]:
        return self._db.integrity_problems()
