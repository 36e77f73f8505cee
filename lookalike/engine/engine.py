"""The engine: ties images, encoder, catalogue store and index together.

Every face (CLI, REST API, web page) calls this and nothing below it.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encoders import DEFAULT_MODEL, Encoder, load_encoder
from lookalike.encoders.views import DEFAULT_QUERY_MODE, QUERY_MODES, query_views
from lookalike.engine.evaluation import QueryOutcome, RetrievalEvaluation, read_queries_csv, summarise
from lookalike.engine.pricing import PricedNeighbour, PriceEstimate, absolute_percentage_error, estimate_price
from lookalike.engine.sources import Problem, SourceEntry, entries_from_folder, entries_from_metadata
from lookalike.images import DecodeLimits, ImageDecodeError, decode_image
from lookalike.index import MISSING_KEY, VectorIndex, choose_backend, create_index, load_index
from lookalike.index.base import read_meta
from lookalike.store import Catalog, CatalogError, Item, ItemFilter

INDEX_FOLDER = "index"
THUMB_SIDE = 320
BATCH_SIZE = 32
DECODE_THREADS = 2
DECODE_AHEAD = 4 * BATCH_SIZE
ImageInput = str | os.PathLike | bytes | Image.Image


class LookalikeError(RuntimeError):
    """An error whose message is meant for the user, as is."""


class ItemNotFoundError(LookalikeError):
    pass


class ItemExistsError(LookalikeError):
    pass


@dataclass
class SearchHit:
    id: str
    score: float
    title: str | None
    category: str | None
    price: float | None
    currency: str | None
    image_path: str | None
    extra: dict

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(self.score, 4), "title": self.title, "category": self.category,
                "price": self.price, "currency": self.currency, "image_path": self.image_path, "extra": self.extra}


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit]
    took_ms: float
    embed_ms: float = 0.0
    estimate: PriceEstimate | None = None

    def to_dict(self) -> dict:
        body = {"query": self.query, "results": [hit.to_dict() for hit in self.hits], "took_ms": round(self.took_ms, 1)}
        if self.estimate is not None:
            body["estimate"] = self.estimate.to_dict()
        return body


@dataclass
class IndexReport:
    embedded: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PriceEvaluation:
    items: int
    k: int
    mdape: float
    mdape_global_median: float
    mdape_category_median: float
    interval_coverage: float
    low_confidence_share: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _suffix_for(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return "." + (image.format or "img").lower().replace("jpeg", "jpg")
    except Exception:  # noqa: BLE001 - already decoded once; the suffix is cosmetic
        return ".img"


def _describe(query: ImageInput) -> str:
    if isinstance(query, (str, os.PathLike)):
        return str(query)
    if isinstance(query, Image.Image):
        return "<image>"
    return "<upload>"


class Engine:
    """A catalogue you can add to, remove from, search and price against.

    >>> engine = Engine("catalog")
    >>> engine.index_sources(["photos/"])
    >>> engine.search("new_photo.jpg", k=5).hits[0].id
    """

    def __init__(self, catalog_dir: str | os.PathLike = "catalog", model: str | None = None, index: str = "auto",
                 encoder: Encoder | None = None, create: bool = True, decode_limits: DecodeLimits = DecodeLimits(),
                 query_mode: str = DEFAULT_QUERY_MODE, index_options: dict | None = None):
        self.catalog = Catalog(catalog_dir, create=create)
        self.directory = self.catalog.directory
        self.model_spec = model
        self._encoder = encoder
        self._loaded_spec: str | None = None
        self._spec_recorded = False
        self.requested_backend = index
        self.index_options = dict(index_options or {})
        self.decode_limits = decode_limits
        if query_mode not in QUERY_MODES:
            raise LookalikeError(f"unknown query mode {query_mode!r}; choose one of {', '.join(QUERY_MODES)}")
        self.query_mode = query_mode
        self._vector_index: VectorIndex | None = None
        self._index_lock = threading.RLock()
        self._index_dirty = False

    # -- parts, loaded on first use -------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            spec = self.model_spec or self._stored_model_spec() or DEFAULT_MODEL
            self._encoder = load_encoder(spec)
            self._loaded_spec, self._spec_recorded = spec, False
        return self._encoder

    def _stored_model_spec(self) -> str | None:
        model_id = self.catalog.model_id
        if not model_id:
            return None
        stored = self.catalog.get_meta("model_spec")
        if stored and stored.partition("@")[2] == model_id:
            return stored.partition("@")[0]
        # Catalogues written before the spec was recorded: built-in ids read name:pooling:size:pN[:int8].
        parts = model_id.split(":")
        options = [part for part in parts[1:3] if part] + (["int8"] if "int8" in parts[3:] else [])
        return ":".join([parts[0], *options])

    @property
    def model_id(self) -> str:
        """The model whose vectors this engine uses: the one asked for, else the
        catalogue's (so removing or checking items never loads a model)."""
        if self._encoder is not None or self.model_spec:
            return self.encoder.model_id
        return self.catalog.model_id or self.encoder.model_id

    @property
    def index(self) -> VectorIndex:
        with self._index_lock:
            if self._vector_index is None:
                self.catalog.check_model(self.model_id)
                self._vector_index = self._load_or_build_index()
            return self._vector_index

    def _stored_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self.catalog.vectors_for(keys, self.model_id)

    def _attach(self, index: VectorIndex) -> VectorIndex:
        """Give an index that re-ranks from the store its way to the stored vectors."""
        if hasattr(index, "vector_source"):
            index.vector_source = self._stored_vectors
        return index

    def _index_state(self) -> dict:
        return {"generation": self.catalog.generation, "model_id": self.model_id}

    def _load_or_build_index(self) -> VectorIndex:
        import json

        folder = self.directory / INDEX_FOLDER
        count = self.catalog.count_vectors(self.model_id)
        backend = choose_backend(self.requested_backend, count)
        try:
            state = json.loads((folder / "state.json").read_text())
            saved = read_meta(folder)
            same_options = all(saved.get(name) == value for name, value in self.index_options.items())
            if state == self._index_state() and same_options:
                index = load_index(folder)
                if index.backend == backend or self.requested_backend == "auto":
                    return self._attach(index)
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # missing, stale or damaged: rebuilt from the store below
        index = None
        options = self._backend_options(backend)
        try:
            for keys, vectors in self.catalog.vectors(self.model_id):
                index = index or self._attach(create_index(backend, vectors.shape[1], capacity=count + 1024, **options))
                self._add_to_index(index, keys, vectors)
            index = index or self._attach(create_index(backend, self.encoder.dim, **options))
        except TypeError as error:
            raise LookalikeError(f"the {backend} index does not take these options: {error}") from None
        self._vector_index = index
        self._index_dirty = True
        self.flush()
        return index

    def _backend_options(self, backend: str) -> dict:
        options = dict(self.index_options)
        if backend == "milvus":
            # By default Milvus Lite runs embedded on a file in the catalogue folder.
            options.setdefault("uri", str(self.directory / "milvus.db"))
        return options

    def _add_to_index(self, index: VectorIndex, keys, vectors: np.ndarray, items: list[Item] | None = None) -> None:
        """Add to the index; a backend that filters natively (Milvus) also gets category and price."""
        if not getattr(index, "native_filters", False):
            index.add(keys, vectors)
            return
        if items is None:
            found = self.catalog.get_many(np.asarray(keys).tolist())
            items = [found.get(int(key)) for key in keys]
        fields = [{"category": item.category if item else None, "price": item.price if item else None} for item in items]
        index.add(keys, vectors, fields)

    def flush(self) -> None:
        """Save the index if it changed; a reader never sees a half-written one."""
        import json

        with self._index_lock:
            if not self._index_dirty or self._vector_index is None:
                return
            final = self.directory / INDEX_FOLDER
            fresh = self.directory / f"{INDEX_FOLDER}.new-{os.getpid()}"
            old = self.directory / f"{INDEX_FOLDER}.old-{os.getpid()}"
            shutil.rmtree(fresh, ignore_errors=True)
            self._vector_index.save(fresh)
            (fresh / "state.json").write_text(json.dumps(self._index_state()))
            if final.exists():
                final.rename(old)
            fresh.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            self._index_dirty = False

    def close(self) -> None:
        self.flush()
        if hasattr(self._vector_index, "close"):  # a client of an index server (Milvus)
            self._vector_index.close()
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- embedding --------------------------------------------------------------------
    def _decode(self, source: ImageInput, target_size: int | None) -> Image.Image:
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        return decode_image(source, target_size=target_size, limits=self.decode_limits)

    def _prepare(self, source: ImageInput) -> np.ndarray:
        return self.encoder.preprocess(self._decode(source, self.encoder.decode_size))

    def _embed_arrays(self, arrays: list[np.ndarray]) -> np.ndarray:
        if not arrays:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.concatenate([self.encoder.embed_arrays(np.stack(arrays[i : i + BATCH_SIZE]))
                               for i in range(0, len(arrays), BATCH_SIZE)])

    def embed(self, sources: Sequence[ImageInput]) -> np.ndarray:
        """One unit vector per image, as stored for catalogue items; raises
        ImageDecodeError for a bad image."""
        return self._embed_arrays([self._prepare(source) for source in sources])

    def embed_query(self, query: ImageInput) -> np.ndarray:
        """Unit vectors of the query's views (see encoders/views.py)."""
        # Crops need detail, so decode at twice the model's size.
        image = self._decode(query, 2 * self.encoder.decode_size)
        return self._embed_arrays([self.encoder.preprocess(view) for view in query_views(image, self.query_mode)])

    def _embed_entries(self, entries: list[SourceEntry], report: IndexReport,
                       on_batch: Callable[[int], None] | None) -> None:
        def prepare(entry: SourceEntry):
            try:
                return entry, self._prepare(entry.path), None
            except ImageDecodeError as error:
                return entry, None, str(error)

        remaining = iter(entries)
        # Decode ahead of the model in threads, but only a few batches ahead: a million
        # photos must not all sit decoded in memory while the model catches up.
        ahead: deque[Future] = deque()

        def top_up(pool: ThreadPoolExecutor) -> None:
            while len(ahead) < DECODE_AHEAD and (entry := next(remaining, None)) is not None:
                ahead.append(pool.submit(prepare, entry))

        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            pending: list[tuple[SourceEntry, np.ndarray]] = []
            top_up(pool)
            while ahead:
                entry, array, error = ahead.popleft().result()
                top_up(pool)
                if error:
                    report.problems.append(Problem(str(entry.path), error))
                    if on_batch:
                        on_batch(1)
                    continue
                pending.append((entry, array))
                if len(pending) == BATCH_SIZE:
                    self._store_batch(pending, report, on_batch)
                    pending = []
            if pending:
                self._store_batch(pending, report, on_batch)

    def _embed_entries_with_ray(self, entries: list[SourceEntry], report: IndexReport,
                                on_batch: Callable[[int], None] | None, address: str) -> None:
        from lookalike.engine.distributed import embed_with_ray

        _ = self.encoder  # exported and cached once here, before the actors load it
        spec = self._loaded_spec
        if spec is None:
            raise LookalikeError("Ray embedding needs a model spec (--model), not an encoder object")
        paths = [str(entry.path) for entry in entries]
        for positions, vectors, errors in embed_with_ray(paths, spec, address):
            good = [row for row, error in enumerate(errors) if not error]
            report.problems += [Problem(paths[positions[row]], error) for row, error in enumerate(errors) if error]
            if good:
                self.add_vectors([entries[positions[row]].item for row in good], vectors[good])
                report.embedded += len(good)
            if on_batch:
                on_batch(len(positions))

    def _store_batch(self, batch: list[tuple[SourceEntry, np.ndarray]], report: IndexReport,
                     on_batch: Callable[[int], None] | None) -> None:
        vectors = self.encoder.embed_arrays(np.stack([array for _, array in batch]))
        items = [entry.item for entry, _ in batch]
        self.add_vectors(items, vectors)
        report.embedded += len(batch)
        if on_batch:
            on_batch(len(batch))

    # -- writes -------------------------------------------------------------------------
    def add_vectors(self, items: list[Item], vectors: np.ndarray) -> list[int]:
        """Store items with precomputed vectors and make them searchable."""
        with self._index_lock:
            index = self.index
            keys = self.catalog.upsert(zip(items, vectors), self.model_id)
            self._add_to_index(index, np.asarray(keys, np.int64), vectors, items)
            self._index_dirty = True
            self._remember_model_spec()
            return keys

    def _remember_model_spec(self) -> None:
        """Record how to load this catalogue's model (``hf:...``, ``...:int8``), which its model id alone does not say."""
        if not self._loaded_spec or self._spec_recorded:
            return
        if self.catalog.model_id == self.model_id:
            record = f"{self._loaded_spec}@{self.model_id}"
            if self.catalog.get_meta("model_spec") != record:
                self.catalog.set_meta("model_spec", record)
            self._spec_recorded = True

    def add_item(self, item: Item, image: ImageInput, replace: bool = True) -> Item:
        """Add one item from an image (path, bytes or PIL image); durable and
        searchable on return. Bytes are kept as a copy in the catalogue folder.
        With ``replace=False`` an existing id is refused (ItemExistsError)."""
        if not replace and self.catalog.get(item.id) is not None:
            raise ItemExistsError(f"an item with id {item.id!r} exists; delete it first")
        vector = self.embed([image])
        if isinstance(image, (bytes, bytearray)):
            item.image_path = str(self._store_copy(bytes(image)))
        elif isinstance(image, (str, os.PathLike)) and item.image_path is None:
            item.image_path = str(Path(image).absolute())
        self.add_vectors([item], vector)
        return item

    def _store_copy(self, data: bytes) -> Path:
        """Write an uploaded photo under images/, named by its content, synced to disk."""
        import hashlib

        folder = self.directory / "images"
        folder.mkdir(exist_ok=True)
        target = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{_suffix_for(data)}"
        if not target.exists():
            temporary = target.with_suffix(target.suffix + f".tmp-{os.getpid()}-{threading.get_ident()}")
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        return target

    def thumbnail(self, item_id: str, size: str = "thumb") -> Path:
        """A JPEG of the item's photo: 'thumb' (made once, cached) or 'full' (the original file)."""
        item = self.catalog.get(item_id)
        if item is None:
            raise ItemNotFoundError(f"no item with id {item_id!r}")
        if not item.image_path or not Path(item.image_path).is_file():
            raise LookalikeError(f"the photo of item {item_id!r} is missing")
        if size == "full":
            return Path(item.image_path)
        if size != "thumb":
            raise LookalikeError("size must be thumb or full")
        import hashlib

        stat = Path(item.image_path).stat()
        name = hashlib.sha256(f"{item.image_path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:32]
        target = self.directory / "thumbs" / f"{name}.jpg"
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            image = decode_image(item.image_path, target_size=THUMB_SIDE, limits=self.decode_limits)
            image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
            temporary = target.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
            image.save(temporary, "JPEG", quality=85)
            os.replace(temporary, target)
        return target

    def browse(self, category: str | None = None, text: str | None = None, page: int = 1,
               page_size: int = 24) -> tuple[list[Item], int]:
        """A page of items (newest first) and the total that match."""
        if page < 1 or not 1 <= page_size <= 200:
            raise LookalikeError("page must be >= 1 and page_size 1-200")
        return self.catalog.browse(category, text, (page - 1) * page_size, page_size)

    def index_sources(self, sources: Iterable[str | os.PathLike] = (), metadata: str | os.PathLike | None = None,
                      on_total: Callable[[int], None] | None = None,
                      on_progress: Callable[[int], None] | None = None, ray: str | None = None) -> IndexReport:
        """Index folders/files and/or a metadata file; only new or changed images are embedded.
        With ``ray`` ("local", "auto" or a cluster address) the embedding runs in Ray Data actors."""
        started = time.perf_counter()
        report = IndexReport()
        entries: list[SourceEntry] = []
        for path in [*sources, *([metadata] if metadata is not None else [])]:
            if not Path(path).exists():
                raise LookalikeError(f"{path}: no such file or folder")
        if metadata is not None:
            found, problems = entries_from_metadata(Path(metadata))
            entries += found
            report.problems += problems
        described = {entry.path for entry in entries}
        for source in sources:
            found, problems = entries_from_folder(Path(source))
            entries += [entry for entry in found if entry.path not in described]
            report.problems += problems
        self.catalog.check_model(self.model_id)
        known = self.catalog.source_states()
        missing_vectors = {item.id for item in self.catalog.keys_without_vector(self.model_id)}
        to_embed, metadata_only = [], []
        for entry in entries:
            try:
                stat = entry.path.stat()
            except OSError as error:
                report.problems.append(Problem(str(entry.path), f"cannot read file: {error.strerror}"))
                continue
            entry.item.image_path = str(entry.path)
            entry.item.source_size, entry.item.source_mtime_ns = stat.st_size, stat.st_mtime_ns
            previous = known.get(str(entry.path))
            if previous == (entry.item.id, stat.st_size, stat.st_mtime_ns) and entry.item.id not in missing_vectors:
                current = self.catalog.get(entry.item.id)
                if current is not None and current.public_dict() != entry.item.public_dict():
                    metadata_only.append(entry.item)
                else:
                    report.unchanged += 1
            else:
                to_embed.append(entry)
        if metadata_only:
            keys = np.asarray(self.catalog.upsert(((item, None) for item in metadata_only), self.model_id), np.int64)
            if getattr(self.index, "native_filters", False):  # the backend keeps its own copy of category and price
                with self._index_lock:
                    self._add_to_index(self.index, keys, self.catalog.vectors_for(keys, self.model_id), metadata_only)
                    self._index_dirty = True
            report.metadata_updated = len(metadata_only)
        if on_total:
            on_total(len(to_embed))
        if ray is not None and to_embed:
            self._embed_entries_with_ray(to_embed, report, on_progress, ray)
        else:
            self._embed_entries(to_embed, report, on_progress)
        self.flush()
        report.seconds = time.perf_counter() - started
        return report

    def remove(self, ids: Iterable[str]) -> list[str]:
        """Remove items; returns the ids that existed. They are never returned again."""
        with self._index_lock:
            removed = self.catalog.remove(list(ids))
            if removed:
                self.index.remove(np.asarray([item.key for item in removed], np.int64))
                self._index_dirty = True
            return [item.id for item in removed]

    def reindex(self, on_total: Callable[[int], None] | None = None,
                on_progress: Callable[[int], None] | None = None) -> IndexReport:
        """Re-embed every item with the current model (resumable), then switch to it."""
        started = time.perf_counter()
        report = IndexReport()
        todo = self.catalog.keys_without_vector(self.model_id)
        if on_total:
            on_total(len(todo))
        for start in range(0, len(todo), BATCH_SIZE):
            batch_items, arrays = [], []
            for item in todo[start : start + BATCH_SIZE]:
                try:
                    arrays.append(self._prepare(item.image_path or ""))
                    batch_items.append(item)
                except ImageDecodeError as error:
                    report.problems.append(Problem(item.id, f"{item.image_path}: {error}"))
            if arrays:
                vectors = self.encoder.embed_arrays(np.stack(arrays))
                self.catalog.replace_vectors([item.key for item in batch_items], vectors, self.model_id)
                report.embedded += len(batch_items)
            if on_progress:
                on_progress(len(todo[start : start + BATCH_SIZE]))
        if not report.problems:
            self.catalog.switch_model(self.model_id)
            self._remember_model_spec()
        with self._index_lock:
            self._vector_index = None
        _ = self.index  # rebuild for the new model
        report.seconds = time.perf_counter() - started
        return report

    # -- search ---------------------------------------------------------------------------
    def _hits(self, keys: np.ndarray, scores: np.ndarray) -> list[SearchHit]:
        valid = [(int(key), float(score)) for key, score in zip(keys, scores) if key != MISSING_KEY]
        items = self.catalog.get_many(key for key, _ in valid)
        return [
            SearchHit(item.id, score, item.title, item.category, item.price, item.currency, item.image_path, item.extra)
            for key, score in valid
            if (item := items.get(key)) is not None
        ]

    def search_vector(self, vectors: np.ndarray, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                      exclude_keys: Sequence[int] = ()) -> list[SearchHit]:
        """Items nearest to a vector, or to any of several views' vectors (an
        item scores its best view)."""
        if k < 1:
            raise LookalikeError("k must be at least 1")
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        search_options = {}
        if getattr(self.index, "native_filters", False) and not item_filter.fields:
            # Category and price are filtered inside the backend (Milvus) rather than as a key list.
            allowed, search_options = None, {"conditions": item_filter, "exclude_keys": exclude_keys}
        else:
            allowed = None if item_filter.is_empty() else self.catalog.keys_matching(item_filter)
            if exclude_keys:
                base = allowed if allowed is not None else self.index.keys()
                allowed = base[~np.isin(base, np.asarray(exclude_keys, np.int64))]
        # Metadata is read under the same lock as the index, so a concurrent
        # remove cannot leave a result pointing at a vanished item.
        with self._index_lock:
            keys, scores = self.index.search(vectors, k, allowed, **search_options)
            if len(vectors) == 1:
                return self._hits(keys[0], scores[0])
            best: dict[int, float] = {}
            for key, score in zip(keys.ravel().tolist(), scores.ravel().tolist()):
                if key != MISSING_KEY and score > best.get(key, -np.inf):
                    best[key] = score
            ranked = sorted(best.items(), key=lambda pair: -pair[1])[:k]
            return self._hits(np.asarray([key for key, _ in ranked], np.int64),
                              np.asarray([score for _, score in ranked], np.float32))

    def search(self, query: ImageInput, k: int = 10, item_filter: ItemFilter = ItemFilter(),
               with_estimate: bool = False) -> SearchResult:
        """Items most similar to a photo (path, bytes or PIL image); with
        ``with_estimate`` also the price estimate, from the same embedding."""
        started = time.perf_counter()
        vectors = self.embed_query(query)
        embed_ms = (time.perf_counter() - started) * 1000
        hits = self.search_vector(vectors, k, item_filter)
        estimate = self.estimate_price_for_vector(vectors, item_filter=item_filter) if with_estimate else None
        return SearchResult(_describe(query), hits, (time.perf_counter() - started) * 1000, embed_ms, estimate)

    def search_text(self, text: str, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                    with_estimate: bool = False) -> SearchResult:
        """Items whose photos match a description ("red armchair"); needs a model
        with a text tower (a CLIP checkpoint, ``--model hf:...``)."""
        text = text.strip()
        if not text:
            raise LookalikeError("the text query is empty")
        embed_texts = getattr(self.encoder, "embed_texts", None)
        if embed_texts is None or not getattr(self.encoder, "has_text", True):
            raise LookalikeError(f"model {self.model_id} has no text tower: text search needs a CLIP model (--model hf:FOLDER)")
        started = time.perf_counter()
        vector = embed_texts([text])
        embed_ms = (time.perf_counter() - started) * 1000
        hits = self.search_vector(vector, k, item_filter)
        estimate = self.estimate_price_for_vector(vector, item_filter=item_filter) if with_estimate else None
        return SearchResult(f"text: {text}", hits, (time.perf_counter() - started) * 1000, embed_ms, estimate)

    def search_by_id(self, item_id: str, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                     with_estimate: bool = False) -> SearchResult:
        """Items most similar to an item already in the catalogue ("more like this")."""
        started = time.perf_counter()
        item, vector = self._item_vector(item_id)
        hits = self.search_vector(vector, k, item_filter, exclude_keys=[item.key])
        estimate = (self.estimate_price_for_vector(vector, item_filter=item_filter, exclude_keys=[item.key])
                    if with_estimate else None)
        return SearchResult(item_id, hits, (time.perf_counter() - started) * 1000, 0.0, estimate)

    def _item_vector(self, item_id: str) -> tuple[Item, np.ndarray]:
        item = self.catalog.get(item_id)
        if item is None:
            raise ItemNotFoundError(f"no item with id {item_id!r}")
        vector = self.catalog.vector(item.key, self.model_id)
        if vector is None:
            raise LookalikeError(f"item {item_id!r} has no vector of model {self.model_id}; run `lookalike reindex`")
        return item, vector

    # -- prices ----------------------------------------------------------------------------
    def estimate_price_for_vector(self, vector: np.ndarray, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                                  exclude_keys: Sequence[int] = ()) -> PriceEstimate:
        priced_filter = ItemFilter(item_filter.category, item_filter.min_price, item_filter.max_price, True, item_filter.fields)
        hits = self.search_vector(vector, k, priced_filter, exclude_keys)
        currency = hits[0].currency if hits else None
        neighbours = [PricedNeighbour(hit.id, hit.score, hit.price, hit.title)
                      for hit in hits if hit.price is not None and hit.currency == currency]
        return estimate_price(neighbours, currency)

    def estimate_price(self, query: ImageInput, k: int = 10, item_filter: ItemFilter = ItemFilter()) -> PriceEstimate:
        """What a photographed item may fetch, from the k most similar sold items."""
        return self.estimate_price_for_vector(self.embed_query(query), k, item_filter)

    def estimate_price_by_id(self, item_id: str, k: int = 10) -> PriceEstimate:
        item, vector = self._item_vector(item_id)
        return self.estimate_price_for_vector(vector, k, exclude_keys=[item.key])

    def evaluate_price(self, k: int = 10, limit: int | None = None) -> PriceEvaluation:
        """Leave-one-out over priced items: our error against two naive baselines."""
        every_priced = list(self.catalog.items(ItemFilter(has_price=True)))
        priced = [item for item in every_priced if item.price]
        if len(priced) < 3:
            raise LookalikeError("evaluate-price needs at least 3 items with a price")
        if limit:
            priced = priced[:: max(1, len(priced) // limit)][:limit]
        all_prices = np.asarray([item.price for item in every_priced], np.float64)
        by_category: dict[str | None, list[float]] = {}
        for item in every_priced:
            by_category.setdefault(item.category, []).append(item.price)
        ours, global_errors, category_errors, covered, low = [], [], [], 0, 0
        for item in priced:
            estimate = self.estimate_price_by_id(item.id, k)
            if estimate.price is None:
                continue
            ours.append(absolute_percentage_error(estimate.price, item.price))
            covered += estimate.low <= item.price <= estimate.high
            low += estimate.low_confidence
            others = all_prices[~np.isclose(all_prices, item.price)] if len(all_prices) > 1 else all_prices
            global_errors.append(absolute_percentage_error(float(np.median(others if len(others) else all_prices)), item.price))
            same = list(by_category.get(item.category, []))
            same.remove(item.price)
            category_errors.append(absolute_percentage_error(float(np.median(same)) if same else float(np.median(all_prices)), item.price))
        count = len(ours)
        return PriceEvaluation(count, k, float(np.median(ours)), float(np.median(global_errors)),
                               float(np.median(category_errors)), covered / count, low / count)

    def evaluate(self, queries_csv: str | os.PathLike, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                 on_total: Callable[[int], None] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> RetrievalEvaluation:
        """Search with every query photo of a queries CSV and score the rankings
        against its relevant ids (see engine/evaluation.py). A query photo that
        cannot be read counts as a miss and is reported with its error."""
        if k < 1:
            raise LookalikeError("k must be at least 1")
        queries = read_queries_csv(queries_csv)
        if on_total:
            on_total(len(queries))
        started = time.perf_counter()
        outcomes = []
        for query in queries:
            try:
                ranked = [hit.id for hit in self.search(query.image, k, item_filter).hits]
                outcomes.append(QueryOutcome(str(query.image), query.relevant, ranked))
            except (ImageDecodeError, OSError) as error:
                outcomes.append(QueryOutcome(str(query.image), query.relevant, [], f"line {query.line}: {error}"))
            if on_progress:
                on_progress(1)
        wanted = {item_id for query in queries for item_id in query.relevant}
        unknown = [item_id for item_id in wanted if self.catalog.get(item_id) is None]
        return summarise(outcomes, k, unknown, time.perf_counter() - started)

    def bench_index(self, queries: int = 200, k: int = 10, seed: int = 0) -> dict:
        """Recall@k and single-query latency of the current index against exact
        search, on stored vectors of random items used as queries."""
        from lookalike.index import ExactIndex

        index = self.index
        keys = index.keys()
        if len(keys) == 0:
            raise LookalikeError("the catalogue is empty")
        chosen = np.random.default_rng(seed).choice(keys, size=min(queries, len(keys)), replace=False)
        vectors = np.stack([self.catalog.vector(int(key), self.model_id) for key in chosen])
        exact = index if isinstance(index, ExactIndex) else None
        if exact is None:
            exact = ExactIndex(vectors.shape[1])
            for batch_keys, batch_vectors in self.catalog.vectors(self.model_id):
                exact.add(batch_keys, batch_vectors)

        def timed(target) -> tuple[list[set], list[float]]:
            found, latencies = [], []
            for vector in vectors:
                started = time.perf_counter()
                result_keys, _ = target.search(vector[None], k)
                latencies.append((time.perf_counter() - started) * 1000)
                found.append(set(result_keys[0].tolist()) - {MISSING_KEY})
            return found, latencies

        with self._index_lock:
            truth, exact_latencies = timed(exact)
            found, latencies = timed(index)
        recall = float(np.mean([len(a & b) / max(len(b), 1) for a, b in zip(found, truth)]))
        return {"backend": index.backend, "items": len(keys), "queries": len(vectors), "k": k, "recall": recall,
                "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
                "exact_p50_ms": float(np.percentile(exact_latencies, 50)),
                "exact_p99_ms": float(np.percentile(exact_latencies, 99))}

    # -- about ---------------------------------------------------------------------------------
    def info(self) -> dict:
        model_id = self.catalog.model_id
        return {
            "catalog": str(self.directory),
            "items": self.catalog.count(),
            "vectors": self.catalog.count_vectors(model_id) if model_id else 0,
            "model_id": model_id,
            "schema_version": self.catalog.schema_version,
            "index_backend": self._saved_index_backend(),
            "categories": [{"category": category, "items": count} for category, count in self.catalog.category_counts()],
        }

    def _saved_index_backend(self) -> str | None:
        try:
            return read_meta(self.directory / INDEX_FOLDER)["backend"]
        except (OSError, ValueError, KeyError):
            return None

    def check(self) -> list[str]:
        """Problems that would make results wrong; empty when the catalogue is sound."""
        problems = self.catalog.integrity_problems()
        model_id = self.catalog.model_id
        if model_id is None:
            return problems
        missing = self.catalog.keys_without_vector(model_id)
        if missing:
            problems.append(f"{len(missing)} items have no vector of model {model_id}, e.g. {missing[0].id!r}")
        stored = {int(key) for keys, _ in self.catalog.vectors(model_id) for key in keys}
        indexed = set(self.index.keys().tolist())
        if stored != indexed:
            problems.append(f"the index holds {len(indexed)} items and the store {len(stored)}; "
                            f"{len(stored - indexed)} missing from the index, {len(indexed - stored)} extra")
        return problems


__all__ = ["CatalogError", "Engine", "IndexReport", "ItemExistsError", "ItemNotFoundError", "LookalikeError", "SearchHit",
           "SearchResult"]
