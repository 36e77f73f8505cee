"""The engine: the one place that wires the catalogue store, the encoder and the index.

Every face (CLI, REST API, web page) calls this and nothing below it. The core
here searches, adds and removes; ingestion (ingest.py), assessment (assess.py)
and the catalogue's photo files (photos.py) are clients of this core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.config import Settings
from lookalike.encoders import Encoder
from lookalike.engine import assess, ingest, photos, price_index
from lookalike.engine import duplicates as duplicate_lots
from lookalike.engine.calibration import Calibration, CalibrationKeeper
from lookalike.engine.calibration import K as APPRAISAL_K
from lookalike.engine.embedding import Embedder, ImageInput, describe
from lookalike.engine.live_index import LiveIndex
from lookalike.engine.lots import rank_lots
from lookalike.engine.pricing import PriceEstimate
from lookalike.engine.results import SearchHit, SearchResult
from lookalike.engine.suggest import Suggestions
from lookalike.engine.verification import ShortlistVerifier
from lookalike.errors import ErrorKind, ExistsError, LookalikeError, NotFoundError
from lookalike.index import VectorIndex
from lookalike.matching import LocalFeatures, local_features
from lookalike.store import Catalog, Item, ItemFilter, Photo

#: The most results one search returns.
MAX_K = 10_000


@dataclass
class _Query:
    """A query turned into vectors: per photo of the new item, one row per view (or the text, or the lot's photos)."""

    description: str
    photos: list[np.ndarray]
    embed_ms: float = 0.0
    exclude_keys: tuple[int, ...] = ()
    #: Local features of the query's photos, for verifying the best lots (none for text).
    features: list[LocalFeatures | None] = field(default_factory=list)
    #: The date a price is estimated for (a catalogue lot: its own sale; None: today).
    sold_at: str | None = None
    #: Text queries score on another scale than the photo searches prices are calibrated on.
    photo_scale: bool = True


class Engine:
    """A catalogue you can add to, remove from, search and price against.

    >>> engine = Engine("catalog")                       # or Engine(Settings.from_environment())
    >>> engine.index_sources(["photos/"])
    >>> engine.search("new_photo.jpg", k=5).hits[0].id
    """

    def __init__(self, catalog: Settings | str | os.PathLike = "catalog", *, encoder: Encoder | None = None,
                 create: bool = True, **settings):
        """``catalog`` is a Settings or a catalogue folder; keyword ``settings`` override its fields
        (model, index, index_options, query_mode, max_pixels, milvus_uri, ...). ``encoder`` hands in a
        loaded model (tests, notebooks) instead of loading ``model``."""
        base = catalog if isinstance(catalog, Settings) else Settings(catalog=Path(catalog))
        self.settings = base.with_(**settings)
        self.catalog = Catalog(self.settings.catalog, create=create, store=self.settings.store)
        self.directory = self.catalog.directory
        self.embedder = Embedder(self.settings, self.catalog, encoder)
        self.live_index = LiveIndex(self.catalog, self.settings, lambda: self.model_id, lambda: self.encoder.dim)
        self.verifier = ShortlistVerifier(self.embedder.decode_limits)
        #: Duplicate reports and verified pairs, kept while the catalogue stays as it is (its generation).
        self._duplicates_cache: dict = {}
        self.calibrations = CalibrationKeeper(self)

    # -- parts -------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        return self.embedder.encoder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def index(self) -> VectorIndex:
        return self.live_index.index

    @property
    def supports_text(self) -> bool:
        """Whether the catalogue's model has a text tower (a CLIP checkpoint): text search works."""
        return self.embedder.supports_text

    @property
    def query_mode(self) -> str:
        return self.embedder.query_mode

    @query_mode.setter
    def query_mode(self, mode: str) -> None:
        self.embedder.query_mode = mode

    def flush(self) -> None:
        """Save the index if it changed; a reader never sees a half-written one."""
        self.live_index.flush()

    def close(self) -> None:
        self.verifier.close()
        self.live_index.close()
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- vectors -------------------------------------------------------------------------------
    def embed(self, sources: Sequence[ImageInput]) -> np.ndarray:
        """One unit vector per image, as stored for catalogue items; raises ImageDecodeError for a bad image."""
        return self.embedder.embed(sources)

    def embed_query(self, query: ImageInput) -> np.ndarray:
        """Unit vectors of the query's views (see encoders/views.py)."""
        return self.embedder.embed_query(query)

    # -- writes -------------------------------------------------------------------------------
    def write_lots(self, lots: list[tuple[Item, list[tuple[Photo, np.ndarray | None]] | None]]) -> list[int]:
        """Store lots with their photos (each with its vector, or None to keep the stored photo) in one
        transaction and make them searchable; returns the lots' keys."""
        with self.live_index.lock:
            _ = self.live_index.index  # built from the store before these rows join it
            changes = self.catalog.write_lots(lots, self.model_id)
            self.live_index.apply(changes, [item for item, _ in lots])
            self.embedder.remember_spec()
            return [change.item_key for change in changes]

    def add_vectors(self, items: list[Item], vectors: np.ndarray) -> list[int]:
        """Store one-photo items (``image_path``) with precomputed vectors and make them searchable."""
        return self.write_lots([(item, [(Photo(item.image_path, item.source_size, item.source_mtime_ns), vector)])
                                for item, vector in zip(items, vectors)])

    def add_item(self, item: Item, images: ImageInput | Sequence[ImageInput], replace: bool = True) -> Item:
        """Add one lot from its photos (paths, bytes or PIL images; the first is the main one); durable and
        searchable on return. Bytes are kept as a copy in the catalogue folder. With ``replace=False`` an
        existing id is refused (ExistsError)."""
        images = _as_list(images)
        if not images:
            raise LookalikeError("a lot needs at least one photo")
        if len(images) > self.settings.max_photos_per_lot:
            raise LookalikeError(f"{len(images)} photos, over the limit of {self.settings.max_photos_per_lot} a lot")
        if not replace and self.catalog.get(item.id) is not None:
            raise ExistsError(f"an item with id {item.id!r} exists; delete it first")
        vectors = self.embed(images)
        kept = [Photo(self._photo_path(image)) for image in images]
        self.write_lots([(item, list(zip(kept, vectors)))])
        return item

    def add_photos(self, item_id: str, images: ImageInput | Sequence[ImageInput]) -> Item:
        """Add photos to a lot, after the ones it has."""
        item = self.get_item(item_id)
        images = _as_list(images)
        if len(item.photos) + len(images) > self.settings.max_photos_per_lot:
            raise LookalikeError(f"the lot would have {len(item.photos) + len(images)} photos, over the limit of "
                                 f"{self.settings.max_photos_per_lot}", ErrorKind.CONFLICT)
        vectors = self.embed(images)
        new = [(Photo(self._photo_path(image)), vector) for image, vector in zip(images, vectors)]
        self.write_lots([(item, [(photo, None) for photo in item.photos] + new)])
        return item

    def remove_photo(self, item_id: str, position: int) -> Item:
        """Remove one photo of a lot (and its vectors); a lot keeps at least one photo."""
        item = self.get_item(item_id)
        if not 0 <= position < len(item.photos):
            raise NotFoundError(f"item {item_id!r} has no photo {position} (it has {len(item.photos)})")
        if len(item.photos) == 1:
            raise LookalikeError("a lot keeps at least one photo: remove the lot instead", ErrorKind.CONFLICT)
        self.write_lots([(item, [(photo, None) for index, photo in enumerate(item.photos) if index != position])])
        return item

    def _photo_path(self, image: ImageInput) -> str | None:
        if isinstance(image, (bytes, bytearray)):
            return str(photos.store_copy(self.directory, bytes(image)))
        if isinstance(image, (str, os.PathLike)):
            return str(Path(image).absolute())
        return None

    def remove(self, ids: Iterable[str]) -> list[str]:
        """Remove lots; returns the ids that existed. They are never returned again."""
        with self.live_index.lock:
            removed = self.catalog.remove(list(ids))
            photo_keys = [photo.key for item in removed for photo in item.photos]
            if photo_keys:
                self.live_index.remove(photo_keys)
            return [item.id for item in removed]

    def index_sources(self, sources: Iterable[str | os.PathLike] = (), metadata: str | os.PathLike | None = None,
                      on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None,
                      ray: str | None = None, lot_per_folder: bool = False) -> ingest.IndexReport:
        """Index folders/files and/or a metadata file; only new or changed photos are embedded.
        With ``lot_per_folder`` each folder of photos is one lot. With ``ray`` ("local", "auto" or a
        cluster address) the embedding runs in Ray Data actors."""
        return ingest.index_sources(self, sources, metadata, on_total, on_progress, ray, lot_per_folder)

    def reindex(self, on_total: Callable[[int], None] | None = None,
                on_progress: Callable[[int], None] | None = None) -> ingest.IndexReport:
        """Re-embed every item with the current model (resumable), then switch to it."""
        return ingest.reindex(self, on_total, on_progress)

    # -- search -------------------------------------------------------------------------------
    def search_vector(self, vectors: np.ndarray, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                      exclude_keys: Sequence[int] = ()) -> list[SearchHit]:
        """Lots nearest to a vector, or to any of several views' vectors (a lot scores its best photo and view)."""
        return self._search_lots([np.atleast_2d(np.asarray(vectors, np.float32))], k, item_filter, exclude_keys)

    def _search_lots(self, queries: list[np.ndarray], k: int, item_filter: ItemFilter,
                     exclude_keys: Sequence[int] = ()) -> list[SearchHit]:
        if not 1 <= k <= MAX_K:
            raise LookalikeError(f"k must be between 1 and {MAX_K}")
        with self.live_index.lock:
            matches = rank_lots(lambda views, n: self.live_index.search(views, n, item_filter, exclude_keys),
                                self.catalog.photo_owners, queries, k, len(self.index))
            items = self.catalog.get_many(match.item_key for match in matches)
        hits = []
        for match in matches:
            item = items.get(match.item_key)
            if item is None:
                continue
            photo = item.photos[match.position] if match.position < len(item.photos) else None
            hits.append(SearchHit(item.id, match.score, item.title, item.category, item.price, item.currency,
                                  photo.path if photo else item.image_path, item.extra, match.position, len(item.photos),
                                  match.query if len(queries) > 1 else None, item.sold_at, rank_score=match.ranking))
        return hits

    def _answer(self, query: _Query, k: int, item_filter: ItemFilter, with_estimate: bool, started: float) -> SearchResult:
        verifying = any(found is not None for found in query.features) and self.settings.verify_top > 0
        # The shortlist verified is the verify_top best lots whatever k: a lot just below the k asked for may rise.
        shortlist = max(k, min(self.settings.verify_top, MAX_K)) if verifying else k
        hits = self._search_lots(query.photos, shortlist, item_filter, query.exclude_keys)
        if verifying:
            hits = self.verifier.check(query.features, hits, self.settings.verify_top)[:k]
        estimate = suggestions = None
        if with_estimate:
            estimate = self._estimate(query.photos, APPRAISAL_K, item_filter, query.exclude_keys, query.sold_at,
                                      as_calibrated=query.photo_scale)
            suggestions = self._suggest(query.photos, query.exclude_keys)
        return SearchResult(query.description, hits, (time.perf_counter() - started) * 1000, query.embed_ms, estimate,
                            suggestions)

    def _photo_query(self, images: Sequence[ImageInput], verify: bool = True) -> _Query:
        """The query photos embedded; with ``verify`` (a search) also their local features for verification."""
        if not images:
            raise LookalikeError("give at least one photo")
        if len(images) > self.settings.max_query_photos:
            raise LookalikeError(f"{len(images)} query photos, over the limit of {self.settings.max_query_photos}")
        started = time.perf_counter()
        # Crops need detail (twice the model's size), and so do local features.
        size = max(2 * self.encoder.decode_size, local_features.MAX_SIDE)
        decoded = [self.embedder.decode(image, size) for image in images]
        vectors = [self.embedder.embed_query(image) for image in decoded]
        embed_ms = (time.perf_counter() - started) * 1000
        verifying = verify and self.settings.verify_top > 0
        features = [self.verifier.query_features(image) for image in decoded] if verifying else []
        return _Query(" + ".join(describe(image) for image in images), vectors, embed_ms, features=features)

    def _text_query(self, text: str) -> _Query:
        text = text.strip()
        if not text:
            raise LookalikeError("the text query is empty")
        started = time.perf_counter()
        vectors = self.embedder.embed_text(text)
        return _Query(f"text: {text}", [vectors], (time.perf_counter() - started) * 1000, photo_scale=False)

    def _item_query(self, item_id: str) -> _Query:
        item, vectors = self._item_vectors(item_id)
        features = [self.verifier.photo_features(photo.path) for photo in item.photos] if self.settings.verify_top > 0 else []
        return _Query(item_id, [vectors], 0.0, tuple(photo.key for photo in item.photos), features, item.sold_at)

    def search(self, query: ImageInput | Sequence[ImageInput], k: int = 10, item_filter: ItemFilter = ItemFilter(),
               with_estimate: bool = False) -> SearchResult:
        """Lots most similar to a photo (path, bytes or PIL image), or to several photos of one new item
        (a list: one query, the lots matching all of them first); with ``with_estimate`` also the price
        estimate, from the same embedding."""
        started = time.perf_counter()
        return self._answer(self._photo_query(_as_list(query)), k, item_filter, with_estimate, started)

    def search_text(self, text: str, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                    with_estimate: bool = False) -> SearchResult:
        """Lots whose photos match a description ("red armchair"); needs a model with a
        text tower (a CLIP checkpoint, ``--model hf:...``)."""
        started = time.perf_counter()
        return self._answer(self._text_query(text), k, item_filter, with_estimate, started)

    def search_by_id(self, item_id: str, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                     with_estimate: bool = False) -> SearchResult:
        """Lots most similar to one already in the catalogue ("more like this"), by any of its photos."""
        started = time.perf_counter()
        return self._answer(self._item_query(item_id), k, item_filter, with_estimate, started)

    def _item_vectors(self, item_id: str) -> tuple[Item, np.ndarray]:
        item = self.get_item(item_id)
        keys = [photo.key for photo in item.photos]
        vectors = [self.catalog.vector(key, self.model_id) for key in keys]
        if not keys or any(vector is None for vector in vectors):
            raise LookalikeError(f"item {item_id!r} has photos without a vector of model {self.model_id}; "
                                 "run `lookalike reindex`")
        return item, np.stack(vectors)

    def warm(self) -> None:
        """Read ahead what the first searches would wait for: the filter columns (every estimate filters on a
        price) and the calibration."""
        self.catalog.read_filter_columns()
        self.calibration()

    # -- prices and suggested attributes (engine/calibration.py) ------------------------------------
    def calibration(self, refresh: bool = False, on_total: Callable[[int], None] | None = None,
                    on_progress: Callable[[int], None] | None = None) -> Calibration:
        """When to suggest each field, how wide price ranges are and when to decline: fitted leave-one-out on
        the catalogue, saved in it, refitted when the catalogue has changed by a tenth (or ``refresh``)."""
        return self.calibrations.get(refresh, on_total, on_progress)

    def _estimate(self, queries: list[np.ndarray], k: int, item_filter: ItemFilter, exclude_keys: Sequence[int] = (),
                  sold_at: str | None = None, currency: str | None = None, as_calibrated: bool = True) -> PriceEstimate:
        priced_filter = ItemFilter(item_filter.category, item_filter.min_price, item_filter.max_price, True,
                                   item_filter.fields)
        hits = self._search_lots(queries, k, priced_filter, exclude_keys)
        at = price_index.to_years(sold_at) or price_index.to_years(time.strftime("%Y-%m-%d"))
        # The range's share is measured for the default search: the 10 most similar lots, no filter.
        as_calibrated = as_calibrated and k == APPRAISAL_K and item_filter.is_empty()
        return self.calibration().estimate(hits, at, currency, as_calibrated)

    def _suggest(self, queries: list[np.ndarray], exclude_keys: Sequence[int] = ()) -> Suggestions:
        return self.calibration().suggest(self._search_lots(queries, APPRAISAL_K, ItemFilter(), exclude_keys))

    def estimate_price(self, query: ImageInput | Sequence[ImageInput], k: int = APPRAISAL_K,
                       item_filter: ItemFilter = ItemFilter()) -> PriceEstimate:
        """What a photographed item may fetch: from the k most similar sold lots, with a range calibrated on
        this catalogue's sales, or declined (``declined`` says why) when the similar lots are too few or too far."""
        return self._estimate(self._photo_query(_as_list(query), verify=False).photos, k, item_filter)

    def estimate_price_by_id(self, item_id: str, k: int = APPRAISAL_K) -> PriceEstimate:
        """A catalogue lot priced from the others, as of its own sale."""
        item, vectors = self._item_vectors(item_id)
        return self._estimate([vectors], k, ItemFilter(), [photo.key for photo in item.photos], item.sold_at,
                              item.currency if item.price else None)

    def suggest(self, query: ImageInput | Sequence[ImageInput]) -> Suggestions:
        """Category, fields and a title for a new item, voted by its most similar lots; a field is left out
        (with the reason) where the vote is weak or the matches far, by thresholds calibrated on this catalogue."""
        return self._suggest(self._photo_query(_as_list(query), verify=False).photos)

    def suggest_by_id(self, item_id: str) -> Suggestions:
        item, vectors = self._item_vectors(item_id)
        return self._suggest([vectors], [photo.key for photo in item.photos])

    def duplicates(self, neighbours: int = duplicate_lots.NEIGHBOURS, min_score: float = duplicate_lots.MIN_SCORE,
                   on_total: Callable[[int], None] | None = None,
                   on_progress: Callable[[int], None] | None = None) -> duplicate_lots.DuplicateReport:
        """Groups of lots that show the same object (relisted, imported twice): each lot's ``neighbours``
        nearest lots scoring at least ``min_score`` are verified with local features (engine/duplicates.py).
        The report is kept until the catalogue changes (``cached_duplicates``)."""
        cached = self.cached_duplicates(neighbours, min_score)
        if cached is not None:
            return cached
        report = duplicate_lots.find_duplicates(self, neighbours, min_score, on_total, on_progress,
                                            self._duplicates_cache["pairs"])
        self._duplicates_cache["reports"][neighbours, min_score] = report
        return report

    def cached_duplicates(self, neighbours: int = duplicate_lots.NEIGHBOURS,
                          min_score: float = duplicate_lots.MIN_SCORE) -> duplicate_lots.DuplicateReport | None:
        """The last duplicates report for these settings, if the catalogue is unchanged since."""
        state = (self.model_id, self.catalog.generation)
        if self._duplicates_cache.get("state") != state:
            self._duplicates_cache = {"state": state, "pairs": {}, "reports": {}}
        return self._duplicates_cache["reports"].get((neighbours, min_score))

    # -- assessment (engine/assess.py) ---------------------------------------------------------
    def evaluate(self, queries_csv: str | os.PathLike, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                 on_total: Callable[[int], None] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> assess.RetrievalEvaluation:
        """Search with every query photo of a queries CSV and score the rankings against its
        relevant ids (engine/evaluation.py). An unreadable query photo counts as a miss."""
        return assess.evaluate_retrieval(self, queries_csv, k, item_filter, on_total, on_progress)

    def evaluate_price(self, limit: int | None = None, on_total: Callable[[int], None] | None = None,
                       on_progress: Callable[[int], None] | None = None) -> assess.PriceEvaluation:
        """Leave-one-out price error, range coverage and declines against two naive baselines, with and without
        the price index, and a time-split backtest when lots have sale dates (engine/assess.py)."""
        return assess.evaluate_price(self, limit, on_total, on_progress)

    def evaluate_suggest(self, limit: int | None = None, on_total: Callable[[int], None] | None = None,
                         on_progress: Callable[[int], None] | None = None) -> assess.SuggestEvaluation:
        """Leave-one-out accuracy of suggested attributes per field, against the majority value."""
        return assess.evaluate_suggest(self, limit, on_total, on_progress)

    def bench_index(self, queries: int = 200, k: int = 10, seed: int = 0) -> dict:
        """Recall@k and single-query latency of the index against exact search."""
        return assess.bench_index(self, queries, k, seed)

    # -- reading the catalogue ----------------------------------------------------------------------
    def count(self) -> int:
        return self.catalog.count()

    def categories(self) -> list[tuple[str | None, int]]:
        """(category, item count), largest first."""
        return self.catalog.category_counts()

    def get_item(self, item_id: str) -> Item:
        item = self.catalog.get(item_id)
        if item is None:
            raise NotFoundError(f"no item with id {item_id!r}")
        return item

    def browse(self, category: str | None = None, text: str | None = None, page: int = 1,
               page_size: int = 24) -> tuple[list[Item], int]:
        """A page of items (newest first) and the total that match."""
        if not 1 <= page <= 10**9 or not 1 <= page_size <= 200:
            raise LookalikeError("page must be 1 to 1,000,000,000 and page_size 1-200")
        return self.catalog.browse(category, text, (page - 1) * page_size, page_size)

    def photo_file(self, item_id: str, size: str = "thumb", position: int = 0) -> Path:
        """A file of one of the lot's photos (0, its main one): 'thumb' (a JPEG made once, cached) or 'full'."""
        if size not in ("thumb", "full"):
            raise LookalikeError("size must be thumb or full")
        item = self.get_item(item_id)
        if not 0 <= position < len(item.photos):
            raise NotFoundError(f"item {item_id!r} has no photo {position}")
        path = item.photos[position].path
        if not path or not Path(path).is_file():
            raise NotFoundError(f"photo {position} of item {item_id!r} is missing")
        if size == "full":
            return Path(path)
        return photos.thumbnail(self.directory, Path(path), self.embedder.decode_limits)


    def info(self) -> dict:
        model_id = self.catalog.model_id
        return {
            "catalog": str(self.directory),
            "store": self.catalog.store,
            "items": self.catalog.count(),
            "vectors": self.catalog.count_vectors(model_id) if model_id else 0,
            "model_id": model_id,
            "schema_version": self.catalog.schema_version,
            "index_backend": self.live_index.saved_backend(),
            "categories": [{"category": category, "items": count} for category, count in self.catalog.category_counts()],
        }

    def copy_store_to(self, store: str | None) -> dict:
        """Copy this catalogue, vectors included, into another, empty store (``postgresql://...``, or None for
        SQLite in this catalogue's folder); nothing is re-embedded and the saved index stays valid. Returns the
        rows copied per table and ``store``, where they went (without credentials)."""
        if (store or None) == self.settings.store:
            raise LookalikeError("the catalogue is already in that store")
        target = Catalog(self.directory, store=store)
        try:
            return {**self.catalog.copy_to(target), "store": target.store}
        finally:
            target.close()

    def check(self) -> list[str]:
        """Problems that would make results wrong; empty when the catalogue is sound."""
        problems = self.catalog.integrity_problems()
        model_id = self.catalog.model_id
        if model_id is None:
            return problems
        missing = self.catalog.photos_without_vector(model_id)
        if missing:
            problems.append(f"{len(missing)} photos have no vector of model {model_id}, e.g. one of {missing[0][0]!r}")
        bare = self.catalog.items_without_photos()
        if bare:
            problems.append(f"{len(bare)} items have no photo, e.g. {bare[0]!r}")
        stored = {int(key) for keys, _ in self.catalog.vectors(model_id) for key in keys}
        indexed = set(self.index.keys().tolist())
        if stored != indexed:
            problems.append(f"the index holds {len(indexed)} photos and the store {len(stored)}; "
                            f"{len(stored - indexed)} missing from the index, {len(indexed - stored)} extra")
        return problems


def _as_list(images) -> list:
    """One photo, or several photos of one lot or one new item."""
    return list(images) if isinstance(images, (list, tuple)) else [images]
