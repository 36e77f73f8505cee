"""The catalogue's vector index, kept in step with the store.

The index folder holds a saved index and ``state.json`` (the catalogue's change
counter and the model it was built from). On first use the saved index is loaded
when its state, backend and options match; otherwise it is rebuilt from the
store, which is always the source of truth. ``flush`` saves it into a fresh
folder and swaps that into place, so a reader never sees a half-written index.

A shared index (a Milvus server's collection, a pgvector table, used by several
search servers over one PostgreSQL store) is never rebuilt while it exists: it
is attached to as it stands and reconciled with the store, photo by photo. A
server's own index (hnsw, exact) over a PostgreSQL store follows the other
servers' writes: when the store's change counter has moved, at most every
FOLLOW_SECONDS, it is reconciled with the store. A shared index is told instead
(``others_wrote``), so its searches wait for the other servers' writes.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np

from lookalike.config import Settings
from lookalike.errors import LookalikeError
from lookalike.index import VectorIndex, attach_index, choose_backend, create_index, load_index
from lookalike.index.base import read_meta
from lookalike.store import Catalog, Item, ItemFilter, LotChange

INDEX_FOLDER = "index"
FOLLOW_SECONDS = 0.5


class LiveIndex:
    def __init__(self, catalog: Catalog, settings: Settings, model_id: Callable[[], str], dim: Callable[[], int]):
        self.catalog = catalog
        self.settings = settings
        self.folder = catalog.directory / INDEX_FOLDER
        self._model_id = model_id
        self._dim = dim
        self._index: VectorIndex | None = None
        self._dirty = False
        #: Held around every read and write of the index and the metadata read with it,
        #: so a concurrent remove cannot leave a result pointing at a vanished item.
        self.lock = threading.RLock()
        self._seen_generation: int | None = None
        self._followed_at = 0.0
        #: A write reached the store but not the index (its server was away): reconciled at the next use.
        self._behind_store = False

    @property
    def index(self) -> VectorIndex:
        with self.lock:
            if self._index is None:
                self.catalog.check_model(self._model_id())
                self._seen_generation = self.catalog.generation
                self._index = self._load_or_build()
            return self._index

    @contextmanager
    def _writing(self):
        """An index write after the store's commit: if the index's server is away, the next search heals it."""
        try:
            yield
        except LookalikeError:
            self._behind_store = True
            raise
        if self.catalog.shared and self._seen_generation is not None:
            # The store's counter moved by this server's own commit alone: nothing of the others' to follow.
            generation = self.catalog.generation
            if generation == self._seen_generation + 1:
                self._seen_generation = generation

    def _follow_other_writers(self, index: VectorIndex) -> None:
        """Catch a server's own index up with what other servers wrote to a shared store."""
        if self._behind_store:
            self.reconcile(index)
            self._behind_store, self._dirty = False, True
        if not self.catalog.shared or time.monotonic() - self._followed_at < FOLLOW_SECONDS:
            return
        self._followed_at = time.monotonic()
        generation = self.catalog.generation
        if generation == self._seen_generation:
            return
        self._seen_generation = generation
        if index.shared:
            index.others_wrote()
        else:
            self.reconcile(index)
            self._dirty = True

    def _state(self) -> dict:
        return {"generation": self.catalog.generation, "model_id": self._model_id()}

    def _vectors_by_key(self, keys: np.ndarray) -> np.ndarray:
        return self.catalog.vectors_for(keys, self._model_id())

    def _context(self) -> dict:
        return {"settings": self.settings, "home": self.catalog.directory, "vector_source": self._vectors_by_key}

    def _load_or_build(self) -> VectorIndex:
        count = self.catalog.count_vectors(self._model_id())
        backend = choose_backend(self.settings.index, count)
        # The stored vectors' size, so opening a saved index does not load the model just to ask it.
        first = next(self.catalog.vectors(self._model_id(), batch_rows=1), None)
        dim = first[1].shape[1] if first is not None else self._dim()
        try:
            shared = attach_index(backend, dim, **self._context(), **self.settings.index_options)
        except TypeError as error:
            raise LookalikeError(f"the {backend} index does not take these options: {error}") from None
        if shared is not None:
            self.reconcile(shared)
            self._index, self._dirty = shared, True
            self.flush()
            return shared
        try:
            state = json.loads((self.folder / "state.json").read_text())
            saved = read_meta(self.folder)
            same_options = all(saved.get(name) == value for name, value in self.settings.index_options.items())
            if state == self._state() and same_options:
                index = load_index(self.folder, **self._context())
                if index.backend == backend or self.settings.index == "auto":
                    return index
                index.close()
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # missing, stale or damaged: rebuilt from the store below
        index = None
        try:
            for keys, vectors in self.catalog.vectors(self._model_id()):
                if index is None:
                    index = create_index(backend, vectors.shape[1], capacity=count + 1024, **self._context(),
                                         **self.settings.index_options)
                self._add(index, keys, vectors)
            index = index or create_index(backend, self._dim(), **self._context(), **self.settings.index_options)
        except TypeError as error:
            raise LookalikeError(f"the {backend} index does not take these options: {error}") from None
        self._index, self._dirty = index, True
        self.flush()
        return index

    def reconcile(self, index: VectorIndex) -> tuple[int, int]:
        """Bring an index in line with the store: add the photos it lacks, drop those the store no longer has.
        Returns (added, removed). The index is read before the store: every writer commits to the store first,
        so a photo in the index and not in the store was removed, never one being added."""
        indexed = index.keys()
        stored = self.catalog.photo_keys_with_vector(self._model_id())
        missing, extra = np.setdiff1d(stored, indexed), np.setdiff1d(indexed, stored)
        if len(extra):
            index.remove(extra)
        for start in range(0, len(missing), 5000):
            present, vectors = self.catalog.stored_vectors(missing[start : start + 5000], self._model_id())  # not removed since
            self._add(index, present, vectors)
        return len(missing), len(extra)

    def _fields(self, photo_keys, items: Sequence[Item] | None = None) -> list[dict]:
        """Category and price of each photo's lot, for a backend that filters natively."""
        owners = self.catalog.photo_owners(photo_keys)
        by_key = {item.key: item for item in items} if items else self.catalog.get_many(
            {owner[0] for owner in owners.values()})
        fields = []
        for key in np.asarray(photo_keys).tolist():
            item = by_key.get(owners.get(key, (None, 0))[0])
            fields.append({"category": item.category if item else None, "price": item.price if item else None})
        return fields

    def _add(self, index: VectorIndex, keys, vectors: np.ndarray, items: Sequence[Item] | None = None) -> None:
        if len(keys) == 0:
            return
        index.add(keys, vectors, self._fields(keys, items) if index.native_filters else None)

    # -- changes (keys are photo keys) --------------------------------------------------------
    def apply(self, changes: Sequence[LotChange], items: Sequence[Item]) -> None:
        """Photos added to and removed from lots by a catalogue write."""
        with self.lock, self._writing():
            index = self.index
            removed = [key for change in changes for key in change.removed]
            if removed:
                index.remove(np.asarray(removed, np.int64))
            added = [pair for change in changes for pair in change.added]
            if added:
                self._add(index, np.asarray([key for key, _ in added], np.int64), np.stack([vector for _, vector in added]),
                          items)
            self._dirty = self._dirty or bool(removed or added)

    def update_fields(self, items: Sequence[Item]) -> None:
        """Metadata changed without new vectors: only a backend that keeps its own copy of fields cares."""
        with self.lock, self._writing():
            if self.index.native_filters:
                keys = np.asarray([photo.key for item in items for photo in item.photos], np.int64)
                self._add(self.index, keys, self.catalog.vectors_for(keys, self._model_id()), items)
                self._dirty = True

    def remove(self, keys) -> None:
        with self.lock, self._writing():
            self.index.remove(np.asarray(keys, np.int64))
            self._dirty = True

    def search(self, vectors: np.ndarray, k: int, item_filter: ItemFilter,
               exclude_keys: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Photo keys and scores. Call with ``lock`` held when the caller reads metadata for the keys returned."""
        with self.lock:
            index = self.index
            self._follow_other_writers(index)
            if index.native_filters and not item_filter.fields and item_filter.sold_before is None:
                return index.search(vectors, k, conditions=item_filter, exclude_keys=exclude_keys)
            allowed = None if item_filter.is_empty() else self.catalog.photo_keys_matching(item_filter)
            return index.search(vectors, k, allowed, exclude_keys=exclude_keys)

    def reset(self) -> None:
        """Forget the loaded index; the next use loads or rebuilds it (after a model switch)."""
        with self.lock:
            if self._index is not None:
                self._index.close()
            self._index, self._dirty = None, False

    def saved_backend(self) -> str | None:
        try:
            return read_meta(self.folder)["backend"]
        except (OSError, ValueError, KeyError):
            return None

    def flush(self) -> None:
        """Save the index if it changed."""
        with self.lock:
            if not self._dirty or self._index is None:
                return
            directory = self.folder.parent
            fresh = directory / f"{INDEX_FOLDER}.new-{os.getpid()}"
            old = directory / f"{INDEX_FOLDER}.old-{os.getpid()}"
            shutil.rmtree(fresh, ignore_errors=True)
            self._index.save(fresh)
            (fresh / "state.json").write_text(json.dumps(self._state()))
            if self.folder.exists():
                self.folder.rename(old)
            fresh.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
            self._dirty = False

    def close(self) -> None:
        self.flush()
        if self._index is not None:
            self._index.close()
