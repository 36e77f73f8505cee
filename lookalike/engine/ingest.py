"""Bringing photos into the catalogue: folders and metadata files in, only new or
changed photos embedded, decoding a few batches ahead of the model, in this
process or in Ray Data actors; and re-embedding everything for a new model."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.engine.embedding import BATCH_SIZE
from lookalike.errors import LookalikeError
from lookalike.images import ImageDecodeError
from lookalike.sources import Problem, SourceEntry, entries_from_folder, entries_from_metadata
from lookalike.store import Item, Photo

if TYPE_CHECKING:
    from lookalike.engine.engine import Engine

DECODE_THREADS = 2
DECODE_AHEAD = 4 * BATCH_SIZE
Progress = Callable[[int], None] | None


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


def _read_sources(sources: Iterable[str | os.PathLike], metadata: str | os.PathLike | None,
                  report: IndexReport, lot_per_folder: bool = False) -> list[SourceEntry]:
    sources = list(sources)
    for path in [*sources, *([metadata] if metadata is not None else [])]:
        if not Path(path).exists():
            raise LookalikeError(f"{path}: no such file or folder")
    entries: list[SourceEntry] = []
    if metadata is not None:
        found, problems = entries_from_metadata(Path(metadata))
        entries += found
        report.problems += problems
    described = {path for entry in entries for path in entry.paths}
    for source in sources:
        found, problems = entries_from_folder(Path(source), lot_per_folder)
        entries += [entry for entry in found if not set(entry.paths) & described]
        report.problems += problems
    return entries


@dataclass
class _Lot:
    """A lot being brought in: its photos, each with a vector once embedded, None to keep the stored one,
    or left out when it could not be read."""

    item: Item
    photos: list[Photo]
    vectors: list[np.ndarray | None]
    todo: list[int] = field(default_factory=list)  # positions of the photos to embed
    failed: set[int] = field(default_factory=set)
    listed: int = 1  # photos the source listed, readable or not

    def __post_init__(self) -> None:
        self.waiting = len(self.todo)


def _plan(engine: Engine, entries: list[SourceEntry], report: IndexReport) -> tuple[list[_Lot], list[_Lot]]:
    """Lots with photos to embed, and lots whose photos are all stored already but whose metadata or photo list
    changed. Unchanged lots are counted in the report."""
    catalog, model_id = engine.catalog, engine.model_id
    limit = engine.settings.max_photos_per_lot
    known = catalog.source_states()
    missing_vectors = {photo.path for _, photo in catalog.photos_without_vector(model_id)}
    to_embed, to_update = [], []
    for entry in entries:
        if len(entry.paths) > limit:
            report.problems.append(Problem(entry.item.id, f"{len(entry.paths)} photos, over the limit of {limit}: "
                                                          f"the first {limit} are kept"))
        photos, vectors, todo = [], [], []
        for path in entry.paths[:limit]:
            try:
                stat = path.stat()
            except OSError as error:
                report.problems.append(Problem(str(path), f"cannot read file: {error.strerror}"))
                continue
            photo = Photo(str(path), stat.st_size, stat.st_mtime_ns)
            unchanged = known.get(photo.path) == (entry.item.id, stat.st_size, stat.st_mtime_ns) and photo.path not in missing_vectors
            if not unchanged:
                todo.append(len(photos))
            photos.append(photo)
            vectors.append(None)
        if not photos:
            if len(entry.paths) > 1:
                report.problems.append(Problem(entry.item.id, "no readable photo: the lot is skipped"))
            continue
        entry.item.image_path = photos[0].path
        lot = _Lot(entry.item, photos, vectors, todo, listed=len(entry.paths))
        if todo:
            to_embed.append(lot)
            continue
        current = catalog.get(entry.item.id)
        same_photos = current is not None and [photo.path for photo in current.photos] == [photo.path for photo in photos]
        if current is not None and same_photos and current.public_dict() == entry.item.public_dict():
            report.unchanged += 1
        else:
            to_update.append(lot)
    return to_embed, to_update


def index_sources(engine: Engine, sources: Iterable[str | os.PathLike] = (), metadata: str | os.PathLike | None = None,
                  on_total: Progress = None, on_progress: Progress = None, ray: str | None = None,
                  lot_per_folder: bool = False) -> IndexReport:
    """See Engine.index_sources."""
    started = time.perf_counter()
    report = IndexReport()
    entries = _read_sources(sources, metadata, report, lot_per_folder)
    engine.catalog.check_model(engine.model_id)
    to_embed, to_update = _plan(engine, entries, report)
    if to_update:
        engine.write_lots([(lot.item, list(zip(lot.photos, lot.vectors))) for lot in to_update])
        report.metadata_updated = len(to_update)
    if on_total:
        on_total(sum(lot.waiting for lot in to_embed))
    if ray is not None and to_embed:
        _embed_with_ray(engine, to_embed, report, on_progress, ray)
    else:
        _embed_here(engine, to_embed, report, on_progress)
    engine.flush()
    report.seconds = time.perf_counter() - started
    return report


class _Writer:
    """Writes lots in order as soon as all their photos are embedded (or failed), a batch per transaction."""

    def __init__(self, engine: Engine, lots: list[_Lot], report: IndexReport):
        self.engine, self.report = engine, report
        self.queue = deque(lots)
        self.ready: list[_Lot] = []

    def done(self, lot: _Lot, position: int, vector: np.ndarray | None, error: str | None) -> None:
        lot.waiting -= 1
        if error:
            lot.failed.add(position)
            self.report.problems.append(Problem(lot.photos[position].path or lot.item.id, error))
        else:
            lot.vectors[position] = vector
            self.report.embedded += 1
        while self.queue and self.queue[0].waiting == 0:
            self.ready.append(self.queue.popleft())
        if sum(len(lot.photos) for lot in self.ready) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        lots = []
        for lot in self.ready:
            kept = [(photo, vector) for position, (photo, vector) in enumerate(zip(lot.photos, lot.vectors))
                    if position not in lot.failed]
            if kept:
                lots.append((lot.item, kept))
            elif lot.listed > 1:  # a one-photo lot's bad photo is reported once, as the file it is
                self.report.problems.append(Problem(lot.item.id, "no readable photo: the lot is skipped"))
        if lots:
            self.engine.write_lots(lots)
        self.ready = []


def _embed_here(engine: Engine, lots: list[_Lot], report: IndexReport, on_batch: Progress) -> None:
    embedder = engine.embedder
    writer = _Writer(engine, lots, report)
    jobs = iter([(lot, position) for lot in lots for position in lot.todo])

    def prepare(job: tuple[_Lot, int]):
        lot, position = job
        try:
            return job, embedder.prepare(lot.photos[position].path), None
        except ImageDecodeError as error:
            return job, None, str(error)

    # Decode ahead of the model in threads, but only a few batches ahead: a million
    # photos must not all sit decoded in memory while the model catches up.
    ahead: deque[Future] = deque()

    def top_up(pool: ThreadPoolExecutor) -> None:
        while len(ahead) < DECODE_AHEAD and (job := next(jobs, None)) is not None:
            ahead.append(pool.submit(prepare, job))

    def embed(batch: list[tuple[tuple[_Lot, int], np.ndarray]]) -> None:
        vectors = embedder.encoder.embed_arrays(np.stack([array for _, array in batch]))
        for ((lot, position), _), vector in zip(batch, vectors):
            writer.done(lot, position, vector, None)
        if on_batch:
            on_batch(len(batch))

    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        pending: list[tuple[tuple[_Lot, int], np.ndarray]] = []
        top_up(pool)
        while ahead:
            job, array, error = ahead.popleft().result()
            top_up(pool)
            if error:
                writer.done(*job, None, error)
                if on_batch:
                    on_batch(1)
                continue
            pending.append((job, array))
            if len(pending) == BATCH_SIZE:
                embed(pending)
                pending = []
        if pending:
            embed(pending)
    writer.flush()


def _embed_with_ray(engine: Engine, lots: list[_Lot], report: IndexReport, on_batch: Progress, address: str) -> None:
    from lookalike.engine.distributed import embed_with_ray

    embedder = engine.embedder
    _ = embedder.encoder  # exported and cached once here, before the actors load it
    if embedder.loaded_spec is None:
        raise LookalikeError("Ray embedding needs a model spec (--model), not an encoder object")
    writer = _Writer(engine, lots, report)
    jobs = [(lot, position) for lot in lots for position in lot.todo]
    paths = [lot.photos[position].path for lot, position in jobs]
    for positions, vectors, errors in embed_with_ray(paths, embedder.loaded_spec, address,
                                                     cache_root=str(engine.settings.cache_dir)):
        for row, position in enumerate(positions.tolist()):
            writer.done(*jobs[position], None if errors[row] else vectors[row], errors[row] or None)
        if on_batch:
            on_batch(len(positions))
    writer.flush()


def reindex(engine: Engine, on_total: Progress = None, on_progress: Progress = None) -> IndexReport:
    """See Engine.reindex."""
    started = time.perf_counter()
    report = IndexReport()
    catalog, embedder, model_id = engine.catalog, engine.embedder, engine.model_id
    todo = catalog.photos_without_vector(model_id)
    if on_total:
        on_total(len(todo))
    for start in range(0, len(todo), BATCH_SIZE):
        keys, arrays = [], []
        for item_id, photo in todo[start : start + BATCH_SIZE]:
            try:
                arrays.append(embedder.prepare(photo.path or ""))
                keys.append(photo.key)
            except ImageDecodeError as error:
                report.problems.append(Problem(item_id, f"{photo.path}: {error}"))
        if arrays:
            catalog.replace_vectors(keys, embedder.encoder.embed_arrays(np.stack(arrays)), model_id)
            report.embedded += len(keys)
        if on_progress:
            on_progress(len(todo[start : start + BATCH_SIZE]))
    if not report.problems:
        catalog.switch_model(model_id)
        embedder.remember_spec()
    engine.live_index.reset()
    _ = engine.live_index.index  # rebuilt for the new model
    report.seconds = time.perf_counter() - started
    return report
