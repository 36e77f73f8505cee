"""The lots' filterable fields held in memory, by photo, for a SQLite store.

At a million lots a filter answered in SQL costs what it returns: 0.2 s for a
category of 10,000 lots, 0.3 s for a maker (a scan of every lot's JSON), 2 s for
a fifth of the catalogue by price (benchmarks/filter_bench.py --store). Held as
arrays indexed by lot and photo key, the same filter is a few numpy comparisons.

The columns are read from the store in one snapshot, tagged with the store's
change counter (``generation``), and kept in step by the catalogue's own writes,
each of which re-reads the lots it touched inside its transaction. When the
counter has moved without them (another process wrote) they are read again.
Values compare exactly as the SQL filter does: text by code point, a field as
``CAST(json_extract(extra, ...) AS TEXT)``, which SQLite computes for them.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: Keys sparser than this (highest key over count) are left to SQL: the arrays are indexed by key.
MAX_KEY_SPREAD = 4
KEY_SLACK = 1 << 20
#: Past this many lots or photos the keys would not fit the int32 arrays: SQL answers.
MAX_KEY = 2**31 - 2


class TextColumn:
    """A text value per lot key, as codes into a vocabulary (None: no value)."""

    def __init__(self, size: int):
        self.codes = np.full(size, -1, np.int32)
        self.vocabulary: dict[str, int] = {}

    def grow(self, size: int) -> None:
        if size > len(self.codes):
            grown = np.full(size, -1, np.int32)
            grown[: len(self.codes)] = self.codes
            self.codes = grown

    def set(self, keys: list[int], values: list) -> None:
        self.codes[keys] = [-1 if value is None else self.vocabulary.setdefault(str(value), len(self.vocabulary))
                            for value in values]

    def equals(self, value: str) -> np.ndarray:
        code = self.vocabulary.get(value)
        return np.zeros(len(self.codes), bool) if code is None else self.codes == code

    def less_than(self, value: str) -> np.ndarray:
        below = np.zeros(len(self.vocabulary) + 1, bool)  # the last slot stands for no value
        below[[code for text, code in self.vocabulary.items() if text < value]] = True
        return below[self.codes]


class FilterColumns:
    """Category, price, sale date and metadata fields of every lot, and each photo's lot, at ``generation``."""

    def __init__(self, generation: int, item_size: int, photo_size: int):
        self.generation = generation
        self.category = TextColumn(item_size)
        self.sold_at = TextColumn(item_size)
        self.price = np.full(item_size, np.nan)
        self.fields: dict[str, TextColumn] = {}
        #: photo key -> its lot's key, -1 where no photo has that key (int32: keys are at most a few times the count)
        self.photo_item = np.full(photo_size, -1, np.int32)

    @classmethod
    def read(cls, path: str) -> FilterColumns | None:
        """From the SQLite file at ``path`` in one snapshot; None when the keys are too sparse to index arrays by."""
        with _snapshot(path) as db:
            generation = _generation(db)
            (items, highest_item), = db.execute("SELECT COUNT(*), COALESCE(MAX(key), 0) FROM items")
            (photos, highest_photo), = db.execute("SELECT COUNT(*), COALESCE(MAX(key), 0) FROM photos")
            if (max(highest_item - MAX_KEY_SPREAD * items, highest_photo - MAX_KEY_SPREAD * photos) > KEY_SLACK
                    or max(highest_item, highest_photo) > MAX_KEY):
                return None
            columns = cls(generation, highest_item + 1, highest_photo + 1)
            columns._set_items(db.execute("SELECT key, category, price, sold_at FROM items").fetchall())
            photo_rows = db.execute("SELECT key, item_key FROM photos").fetchall()
        if photo_rows:
            pairs = np.asarray(photo_rows, np.int64)
            columns.photo_item[pairs[:, 0]] = pairs[:, 1]
        return columns

    def _set_items(self, rows: list) -> None:
        if not rows:
            return
        keys, categories, prices, sold = (list(column) for column in zip(*rows))
        self.category.set(keys, categories)
        self.sold_at.set(keys, sold)
        self.price[keys] = [math.nan if price is None else float(price) for price in prices]

    def _grow(self, item_size: int, photo_size: int) -> None:
        if item_size > len(self.price):
            size = max(item_size, 2 * len(self.price))
            for column in (self.category, self.sold_at, *self.fields.values()):
                column.grow(size)
            self.price = np.concatenate([self.price, np.full(size - len(self.price), np.nan)])
        if photo_size > len(self.photo_item):
            size = max(photo_size, 2 * len(self.photo_item))
            self.photo_item = np.concatenate([self.photo_item, np.full(size - len(self.photo_item), -1, np.int32)])

    def changes(self, db, item_keys: list[int]) -> tuple:
        """Inside a write's transaction: what the lots ``item_keys`` are now (gone ones included), to ``apply``
        once it commits."""
        item_keys = sorted(set(item_keys))
        rows, photos, fields = [], [], {name: [] for name in self.fields}
        for start in range(0, len(item_keys), 500):
            chunk = item_keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += db.execute(f"SELECT key, category, price, sold_at FROM items WHERE key IN ({marks})", chunk).fetchall()
            photos += db.execute(f"SELECT key, item_key FROM photos WHERE item_key IN ({marks})", chunk).fetchall()
            for name in list(fields):
                try:
                    fields[name] += db.execute(f"SELECT key, CAST(json_extract(extra, ?) AS TEXT) FROM items "
                                               f"WHERE key IN ({marks})", [_path(name), *chunk]).fetchall()
                except sqlite3.Error:  # unreadable to SQLite's JSON reader: the column is dropped, SQL answers
                    del fields[name]
        return _generation(db), item_keys, rows, photos, fields

    def apply(self, changes: tuple) -> bool:
        """Apply what ``changes`` read; False (and nothing applied) unless it follows this state directly."""
        generation, item_keys, rows, photos, fields = changes
        highest = max([*item_keys, *(key for key, _ in photos)], default=0)
        limit = min(MAX_KEY, MAX_KEY_SPREAD * max(len(self.price), len(self.photo_item)) + KEY_SLACK)
        if generation != self.generation + 1 or highest > limit:
            return False  # read afresh, or left to SQL if the keys have grown too sparse
        self.generation = generation
        if not item_keys:
            return True
        for name in set(self.fields) - set(fields):
            del self.fields[name]
        self._grow(max(item_keys) + 1, max((key for key, _ in photos), default=0) + 1)
        self.category.set(item_keys, [None] * len(item_keys))  # gone unless read back below
        self.sold_at.set(item_keys, [None] * len(item_keys))
        self.price[item_keys] = np.nan
        for column in self.fields.values():
            column.set(item_keys, [None] * len(item_keys))
        self.photo_item[np.isin(self.photo_item, item_keys)] = -1
        self._set_items(rows)
        for name, values in fields.items():
            if values:
                self.fields[name].set(*(list(column) for column in zip(*values)))
        for photo_key, item_key in photos:
            self.photo_item[photo_key] = item_key
        return True

    @staticmethod
    def read_field(path: str, name: str) -> tuple[int, TextColumn] | None:
        """A metadata field's column as the store has it now, with the generation it was read at; None when
        SQLite cannot read it (a lot's fields hold what its JSON reader refuses, such as NaN)."""
        try:
            with _snapshot(path) as db:
                generation = _generation(db)
                values = db.execute("SELECT key, CAST(json_extract(extra, ?) AS TEXT) FROM items", (_path(name),)).fetchall()
        except sqlite3.Error:
            return None
        column = TextColumn(max((key for key, _ in values), default=0) + 1)
        if values:
            column.set(*(list(part) for part in zip(*values)))
        return generation, column

    def add_field(self, name: str, generation: int, column: TextColumn) -> bool:
        """Keep a field's column read at ``generation``, if that is this state's."""
        if generation != self.generation:
            return False
        column.grow(len(self.price))
        self.fields[name] = column
        return True

    def photo_keys_matching(self, item_filter) -> np.ndarray:
        """The photo keys of the lots that match; every field filtered on must have its column."""
        matches = np.ones(len(self.price) + 1, bool)  # the last slot stands for no lot: a photo key never given
        matches[-1] = False
        lots = matches[:-1]
        if item_filter.category is not None:
            lots &= self.category.equals(item_filter.category)
        with np.errstate(invalid="ignore"):
            if item_filter.min_price is not None:
                lots &= self.price >= item_filter.min_price
            if item_filter.max_price is not None:
                lots &= self.price <= item_filter.max_price
        if item_filter.has_price or item_filter.min_price is not None or item_filter.max_price is not None:
            lots &= ~np.isnan(self.price)
        for name, value in item_filter.fields:
            lots &= self.fields[name].equals(value)
        if item_filter.sold_before is not None:
            lots &= self.sold_at.less_than(item_filter.sold_before)
        return np.flatnonzero(matches[self.photo_item])


@contextmanager
def _snapshot(path: str):
    """A read-only connection of its own, in one read transaction: the catalogue's connection stays free."""
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        db.execute("BEGIN")
        yield db
    finally:
        db.close()


def _generation(db) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    return int(row[0]) if row else 0


def _path(name: str) -> str:
    return f'$."{name}"'
