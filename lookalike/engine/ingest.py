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
                  report: IndexReport) -> list[SourceEntry]:
    sources = list(sources)
    for path in [*sources, *([metadata] if metadata is not None else [])]:
        if not Path(path).exists():
            raise LookalikeError(f"{path}: no such file or folder")
    entries: list[SourceEntry] = []
    if metadata is not None:
        found, problems = entries_from_metadata(Path(metadata))
        entries += found
        report.problems += problems
    described = {entry.path for entry in entries}
    for source in sources:
        found, problems = entries_from_folder(Path(source))
        entries += [entry for entry in found if entry.path not in described]
        report.problems += problems
    return entries


def index_sources(engine: Engine, sources: Iterable[str | os.PathLike] = (), metadata: str | os.PathLike | None = None,
                  on_total: Progress = None, on_progress: Progress = None, ray: str | None = None) -> IndexReport:
    """See Engine.index_sources."""
    started = time.perf_counter()
    report = IndexReport()
    entries = _read_sources(sources, metadata, report)
    catalog, model_id = engine.catalog, engine.model_id
    catalog.check_model(model_id)
    known = catalog.source_states()
    missing_vectors = {item.id for item in catalog.keys_without_vector(model_id)}
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
            current = catalog.get(entry.item.id)
            if current is not None and current.public_dict() != entry.item.public_dict():
                metadata_only.append(entry.item)
            else:
                report.unchanged += 1
        else:
            to_embed.append(entry)
    if metadata_only:
        keys = catalog.upsert(((item, None) for item in metadata_only), model_id)
        engine.live_index.update_fields(keys, metadata_only)
        report.metadata_updated = len(metadata_only)
    if on_total:
        on_total(len(to_embed))
    if ray is not None and to_embed:
        _embed_with_ray(engine, to_embed, report, on_progress, ray)
    else:
        _embed_here(engine, to_embed, report, on_progress)
    engine.flush()
    report.seconds = time.perf_counter() - started
    return report


def _embed_here(engine: Engine, entries: list[SourceEntry], report: IndexReport, on_batch: Progress) -> None:
    embedder = engine.embedder

    def prepare(entry: SourceEntry):
        try:
            return entry, embedder.prepare(entry.path), None
        except ImageDecodeError as error:
            return entry, None, str(error)

    def store(batch: list[tuple[SourceEntry, np.ndarray]]) -> None:
        vectors = embedder.encoder.embed_arrays(np.stack([array for _, array in batch]))
        engine.add_vectors([entry.item for entry, _ in batch], vectors)
        report.embedded += len(batch)
        if on_batch:
            on_batch(len(batch))

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
                store(pending)
                pending = []
        if pending:
            store(pending)


def _embed_with_ray(engine: Engine, entries: list[SourceEntry], report: IndexReport, on_batch: Progress,
                    address: str) -> None:
    from lookalike.engine.distributed import embed_with_ray

    embedder = engine.embedder
    _ = embedder.encoder  # exported and cached once here, before the actors load it
    if embedder.loaded_spec is None:
        raise LookalikeError("Ray embedding needs a model spec (--model), not an encoder object")
    paths = [str(entry.path) for entry in entries]
    for positions, vectors, errors in embed_with_ray(paths, embedder.loaded_spec, address,
                                                     cache_root=str(engine.settings.cache_dir)):
        good = [row for row, error in enumerate(errors) if not error]
        report.problems += [Problem(paths[positions[row]], error) for row, error in enumerate(errors) if error]
        if good:
            engine.add_vectors([entries[positions[row]].item for row in good], vectors[good])
            report.embedded += len(good)
        if on_batch:
            on_batch(len(positions))


def reindex(engine: Engine, on_total: Progress = None, on_progress: Progress = None) -> IndexReport:
    """See Engine.reindex."""
    started = time.perf_counter()
    report = IndexReport()
    catalog, embedder, model_id = engine.catalog, engine.embedder, engine.model_id
    todo = catalog.keys_without_vector(model_id)
    if on_total:
        on_total(len(todo))
    for start in range(0, len(todo), BATCH_SIZE):
        batch_items, arrays = [], []
        for item in todo[start : start + BATCH_SIZE]:
            try:
                arrays.append(embedder.prepare(item.image_path or ""))
                batch_items.append(item)
            except ImageDecodeError as error:
                report.problems.append(Problem(item.id, f"{item.image_path}: {error}"))
        if arrays:
            vectors = embedder.encoder.embed_arrays(np.stack(arrays))
            catalog.replace_vectors([item.key for item in batch_items], vectors, model_id)
            report.embedded += len(batch_items)
        if on_progress:
            on_progress(len(todo[start : start + BATCH_SIZE]))
    if not report.problems:
        catalog.switch_model(model_id)
        embedder.remember_spec()
    engine.live_index.reset()
    _ = engine.live_index.index  # rebuilt for the new model
    report.seconds = time.perf_counter() - started
    return report
