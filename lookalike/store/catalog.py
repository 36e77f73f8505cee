"""The catalogue: lots (items), their metadata, their photos and the photos' vectors in one SQLite file.

An item (a lot) has 1..N photos in order, the first its main photo; each photo
has a vector per model. The vector index is keyed by photo, searches group
photos back into lots.

SQLite in WAL mode with synchronous=FULL: a write is durable once its
transaction commits, and a crash at any moment leaves the last committed
state. The schema carries an explicit version (PRAGMA user_version) and is
brought up to date by ordered migrations when a catalogue is opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lookalike.errors import LookalikeError

DATABASE_NAME = "catalog.sqlite"

MIGRATIONS: list[str] = [
    # 1: items, vectors, meta
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE items (
        key INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        image_path TEXT,
        title TEXT,
        category TEXT,
        price REAL,
        currency TEXT,
        sold_at TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        source_size INTEGER,
        source_mtime_ns INTEGER,
        added_at TEXT NOT NULL
    );
    CREATE INDEX items_category ON items(category);
    CREATE INDEX items_price ON items(price);
    CREATE INDEX items_image_path ON items(image_path);
    CREATE TABLE vectors (
        key INTEGER NOT NULL REFERENCES items(key) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (key, model_id)
    );
    CREATE INDEX vectors_model ON vectors(model_id);
    """,
    # 2: photos. Each item's one photo becomes photo 0 with the item's key as its own, so the vectors (and a
    # saved index, keyed the same) carry over without re-embedding.
    """
    CREATE TABLE photos (
        key INTEGER PRIMARY KEY AUTOINCREMENT,
        item_key INTEGER NOT NULL REFERENCES items(key) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        path TEXT,
        source_size INTEGER,
        source_mtime_ns INTEGER
    );
    CREATE INDEX photos_item ON photos(item_key, position);
    CREATE INDEX photos_path ON photos(path);
    INSERT INTO photos(key, item_key, position, path, source_size, source_mtime_ns)
        SELECT key, key, 0, image_path, source_size, source_mtime_ns FROM items;
    CREATE TABLE photo_vectors (
        photo_key INTEGER NOT NULL REFERENCES photos(key) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (photo_key, model_id)
    );
    INSERT INTO photo_vectors(photo_key, model_id, vector) SELECT key, model_id, vector FROM vectors;
    DROP TABLE vectors;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


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

    def sql(self) -> tuple[str, list]:
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
            clauses.append("CAST(json_extract(extra, ?) AS TEXT) = ?")
            params.extend([f'$."{name}"', value])
        if self.sold_before is not None:
            clauses.append("sold_at < ?")
            params.append(self.sold_before)
        return (" AND ".join(clauses) or "1"), params


_ITEM_COLUMNS = "key, id, image_path, title, category, price, currency, sold_at, extra, source_size, source_mtime_ns"


def _row_to_item(row: sqlite3.Row) -> Item:
    return Item(
        key=row[0], id=row[1], image_path=row[2], title=row[3], category=row[4], price=row[5], currency=row[6],
        sold_at=row[7], extra=json.loads(row[8] or "{}"), source_size=row[9], source_mtime_ns=row[10],
    )


class Catalog:
    """One catalogue directory's SQLite store. Safe to share between threads."""

    def __init__(self, directory: str | Path, create: bool = True):
        self.directory = Path(directory)
        path = self.directory / DATABASE_NAME
        if not path.exists() and not create:
            raise CatalogError(f"no catalogue at {self.directory} (run `lookalike index` or `lookalike demo` first)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as error:
            raise CatalogError(f"cannot open catalogue at {self.directory}: {error}") from None
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- schema -----------------------------------------------------------------
    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalogue schema version {version} is newer than this lookalike understands ({SCHEMA_VERSION}); upgrade lookalike"
                )
            for number in range(version, SCHEMA_VERSION):
                with self.transaction() as db:
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

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

    # -- meta -------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            self._set_meta(db, key, value)

    def _set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def model_id(self) -> str | None:
        return self.get_meta("model_id")

    @property
    def generation(self) -> int:
        """Bumped by every committed change; a saved index records the one it saw."""
        return int(self.get_meta("generation", "0"))

    def _bump(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
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
        with self.transaction() as db:
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
                change = LotChange(item.key)
                if photos is not None:
                    self._replace_photos(db, item, photos, model_id, change)
                changes.append(change)
            self._bump(db)
        return changes

    def _replace_photos(self, db: sqlite3.Connection, item: Item, photos: list[tuple[Photo, np.ndarray | None]],
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
                db.execute("INSERT OR REPLACE INTO photo_vectors(photo_key, model_id, vector) VALUES(?,?,?)",
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
        with self.transaction() as db:
            for item_id in ids:
                row = db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
                if row is None:
                    continue
                item = _row_to_item(row)
                item.photos = self._photos_of(db, [item.key]).get(item.key, [])
                removed.append(item)
                db.execute("DELETE FROM items WHERE key = ?", (row[0],))
            if removed:
                self._bump(db)
        return removed

    def replace_vectors(self, photo_keys: list[int], vectors: np.ndarray, model_id: str) -> None:
        """Store vectors of ``model_id`` beside the current model's (reindex
        fills them in, resumably, then switches)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO photo_vectors(photo_key, model_id, vector) VALUES(?,?,?)",
                [(key, model_id, np.asarray(vector, np.float32).tobytes()) for key, vector in zip(photo_keys, vectors)],
            )
            self._bump(db)

    def switch_model(self, model_id: str) -> None:
        """Make ``model_id`` the catalogue's model and drop other models' vectors."""
        with self.transaction() as db:
            self._set_meta(db, "model_id", model_id)
            db.execute("DELETE FROM photo_vectors WHERE model_id != ?", (model_id,))
            self._bump(db)

    # -- reads ------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def count_vectors(self, model_id: str) -> int:
        """Photo vectors of ``model_id``."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM photo_vectors WHERE model_id = ?", (model_id,)).fetchone()[0]

    def _photos_of(self, db: sqlite3.Connection, item_keys: list[int]) -> dict[int, list[Photo]]:
        found: dict[int, list[Photo]] = {}
        for start in range(0, len(item_keys), 500):
            chunk = item_keys[start : start + 500]
            rows = db.execute(f"SELECT item_key, key, position, path, source_size, source_mtime_ns FROM photos "
                              f"WHERE item_key IN ({','.join('?' * len(chunk))}) ORDER BY item_key, position", chunk)
            for item_key, key, position, path, size, mtime in rows:
                found.setdefault(item_key, []).append(Photo(path, size, mtime, key, position))
        return found

    def _with_photos(self, items: list[Item]) -> list[Item]:
        with self._lock:
            photos = self._photos_of(self._db, [item.key for item in items])
        for item in items:
            item.photos = photos.get(item.key, [])
        return items

    def get(self, item_id: str) -> Item | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return self._with_photos([_row_to_item(row)])[0] if row else None

    def get_many(self, keys: Iterable[int]) -> dict[int, Item]:
        keys = [int(key) for key in keys]
        found: dict[int, Item] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE key IN ({marks})", chunk):
                    found[row[0]] = _row_to_item(row)
        self._with_photos(list(found.values()))
        return found

    def items(self, item_filter: ItemFilter = ItemFilter()) -> Iterator[Item]:
        where, params = item_filter.sql()
        with self._lock:
            rows = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY key", params).fetchall()
        return iter(self._with_photos([_row_to_item(row) for row in rows]))

    def keys_matching(self, item_filter: ItemFilter) -> np.ndarray:
        """The keys of the items that match."""
        where, params = item_filter.sql()
        with self._lock:
            rows = self._db.execute(f"SELECT key FROM items WHERE {where}", params).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def photo_keys_matching(self, item_filter: ItemFilter) -> np.ndarray:
        """The photo keys of the items that match (the index is keyed by photo)."""
        where, params = item_filter.sql()
        with self._lock:
            rows = self._db.execute(
                f"SELECT photos.key FROM photos JOIN items ON items.key = photos.item_key WHERE {where}", params).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def photo_owners(self, photo_keys: Iterable[int]) -> dict[int, tuple[int, int]]:
        """photo key -> (item key, position of the photo in its lot)."""
        keys = [int(key) for key in photo_keys]
        found: dict[int, tuple[int, int]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for key, item_key, position in self._db.execute(
                        f"SELECT key, item_key, position FROM photos WHERE key IN ({','.join('?' * len(chunk))})", chunk):
                    found[key] = (item_key, position)
        return found

    def vector(self, photo_key: int, model_id: str) -> np.ndarray | None:
        with self._lock:
            row = self._db.execute("SELECT vector FROM photo_vectors WHERE photo_key = ? AND model_id = ?",
                                   (photo_key, model_id)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def vectors_for(self, photo_keys: np.ndarray, model_id: str) -> np.ndarray:
        """The vectors of ``photo_keys``, in that order (all must exist)."""
        keys = [int(key) for key in photo_keys]
        found: dict[int, bytes] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(
                    f"SELECT photo_key, vector FROM photo_vectors WHERE model_id = ? AND photo_key IN ({marks})",
                    [model_id, *chunk]))
        return np.frombuffer(b"".join(found[key] for key in keys), dtype=np.float32).reshape(len(keys), -1)

    def vectors(self, model_id: str, batch_rows: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(photo keys, vectors) in batches, for every photo with a vector of ``model_id``."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT photo_key, vector FROM photo_vectors WHERE model_id = ? AND photo_key > ? "
                    "ORDER BY photo_key LIMIT ?", (model_id, last, batch_rows),
                ).fetchall()
            if not rows:
                return
            keys = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
            yield keys, vectors
            last = int(keys[-1])

    def photos_without_vector(self, model_id: str) -> list[tuple[str, Photo]]:
        """(item id, photo) for every photo lacking a vector of ``model_id``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT items.id, photos.path, photos.source_size, photos.source_mtime_ns, photos.key, photos.position "
                "FROM photos JOIN items ON items.key = photos.item_key WHERE photos.key NOT IN "
                "(SELECT photo_key FROM photo_vectors WHERE model_id = ?) ORDER BY photos.key", (model_id,)).fetchall()
        return [(row[0], Photo(*row[1:])) for row in rows]

    def items_without_photos(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM items WHERE key NOT IN (SELECT item_key FROM photos)").fetchall()
        return [row[0] for row in rows]

    def source_states(self) -> dict[str, tuple[str, int | None, int | None]]:
        """photo path -> (item id, size, mtime_ns) for change detection on re-index."""
        with self._lock:
            rows = self._db.execute("SELECT photos.path, items.id, photos.source_size, photos.source_mtime_ns "
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
        where = " AND ".join(clauses) or "1"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM items WHERE {where}", params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY key DESC LIMIT ? OFFSET ?", [*params, limit, offset]
            ).fetchall()
        return self._with_photos([_row_to_item(row) for row in rows]), total

    def category_counts(self) -> list[tuple[str | None, int]]:
        with self._lock:
            return self._db.execute(
                "SELECT category, COUNT(*) FROM items GROUP BY category ORDER BY COUNT(*) DESC"
            ).fetchall()

    def integrity_problems(self) -> list[str]:
        with self._lock:
            result = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
            orphans = self._db.execute("PRAGMA foreign_key_check").fetchall()
        problems = [line for line in result if line != "ok"]
        if orphans:
            problems.append(f"{len(orphans)} vectors without an item")
        return problems
