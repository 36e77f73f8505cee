"""How good the catalogue's answers are: retrieval over a queries CSV, leave-one-out
price error, and the index against exact search. The recall/latency loop here is the
one the benchmarks use too."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lookalike.engine.evaluation import QueryOutcome, RetrievalEvaluation, read_queries_csv, summarise
from lookalike.engine.pricing import absolute_percentage_error
from lookalike.errors import LookalikeError
from lookalike.images import ImageDecodeError
from lookalike.index import MISSING_KEY, ExactIndex
from lookalike.store import ItemFilter

if TYPE_CHECKING:
    from lookalike.engine.engine import Engine


@dataclass
class RecallLatency:
    recall: float
    p50_ms: float
    p99_ms: float
    latencies_ms: list[float]

    def summary(self, digits: int = 3) -> dict:
        return {"recall": round(self.recall, digits), "p50_ms": round(self.p50_ms, digits), "p99_ms": round(self.p99_ms, digits)}


def recall_and_latency(search: Callable[[np.ndarray], Sequence[int]], queries: np.ndarray,
                       truth: Sequence[Sequence[int]], k: int) -> RecallLatency:
    """Time ``search`` (one query vector in, up to k keys out) on each query, one at a time,
    and score its recall@k against ``truth`` (the exact top k of each query)."""
    latencies, overlaps = [], []
    for query, expected in zip(queries, truth):
        started = time.perf_counter()
        found = search(query)
        latencies.append((time.perf_counter() - started) * 1000)
        wanted = {int(key) for key in expected if key != MISSING_KEY}
        got = {int(key) for key in found if key != MISSING_KEY}
        overlaps.append(len(got & wanted) / max(min(k, len(wanted)), 1))
    return RecallLatency(float(np.mean(overlaps)) if overlaps else 0.0, float(np.percentile(latencies, 50)),
                         float(np.percentile(latencies, 99)), latencies)


def bench_index(engine: Engine, queries: int = 200, k: int = 10, seed: int = 0) -> dict:
    """Recall@k and single-query latency of the catalogue's index against exact search,
    on stored vectors of random items used as queries."""
    index, catalog, model_id = engine.index, engine.catalog, engine.model_id
    keys = index.keys()
    if len(keys) == 0:
        raise LookalikeError("the catalogue is empty")
    chosen = np.random.default_rng(seed).choice(keys, size=min(queries, len(keys)), replace=False)
    vectors = catalog.vectors_for(chosen, model_id)
    exact = index if isinstance(index, ExactIndex) else ExactIndex(vectors.shape[1])
    if exact is not index:
        for batch_keys, batch_vectors in catalog.vectors(model_id):
            exact.add(batch_keys, batch_vectors)
    with engine.live_index.lock:
        truth = [exact.search(vector[None], k)[0][0] for vector in vectors]
        reference = recall_and_latency(lambda query: exact.search(query[None], k)[0][0], vectors, truth, k)
        measured = recall_and_latency(lambda query: index.search(query[None], k)[0][0], vectors, truth, k)
    return {"backend": index.backend, "items": len(keys), "queries": len(vectors), "k": k, "recall": measured.recall,
            "p50_ms": measured.p50_ms, "p99_ms": measured.p99_ms,
            "exact_p50_ms": reference.p50_ms, "exact_p99_ms": reference.p99_ms}


def evaluate_retrieval(engine: Engine, queries_csv: str | os.PathLike, k: int = 10, item_filter: ItemFilter = ItemFilter(),
                       on_total: Callable[[int], None] | None = None,
                       on_progress: Callable[[int], None] | None = None) -> RetrievalEvaluation:
    """See Engine.evaluate."""
    if k < 1:
        raise LookalikeError("k must be at least 1")
    queries = read_queries_csv(queries_csv)
    if on_total:
        on_total(len(queries))
    started = time.perf_counter()
    outcomes = []
    for query in queries:
        try:
            ranked = [hit.id for hit in engine.search(query.images, k, item_filter).hits]
            outcomes.append(QueryOutcome(query.describe(), query.relevant, ranked))
        except (ImageDecodeError, OSError) as error:
            outcomes.append(QueryOutcome(query.describe(), query.relevant, [], f"line {query.line}: {error}"))
        if on_progress:
            on_progress(1)
    wanted = {item_id for query in queries for item_id in query.relevant}
    unknown = [item_id for item_id in wanted if engine.catalog.get(item_id) is None]
    return summarise(outcomes, k, unknown, time.perf_counter() - started)


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


def evaluate_price(engine: Engine, k: int = 10, limit: int | None = None) -> PriceEvaluation:
    """See Engine.evaluate_price."""
    every_priced = list(engine.catalog.items(ItemFilter(has_price=True)))
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
        estimate = engine.estimate_price_by_id(item.id, k)
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
