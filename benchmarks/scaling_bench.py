"""The engines a multi-server layout stands on, side by side in one run on this machine.

1. Index: the real Milvus 2.3.5 server vs hnsw (in process) vs pgvector (PostgreSQL 16), on N real-like vectors
   (index_bench.py's: real EfficientNet-Lite0 features grown with noise): build time (adds, then the first search,
   which waits for the graph), recall@10 against exact search and single-query p50, without and with a filter
   (one category of ten: hnsw gets the allowed keys, as the engine passes them; Milvus and pgvector filter inside).
2. Store: PostgreSQL vs SQLite as the catalogue store: lots added per second (one lot per transaction, as the API
   adds them; and 500 per transaction, as `lookalike index` does) and lookups per second (a lot by id; ten lots by
   key, as a search reads its hits).

Both servers are started here on 127.0.0.1 (tests/milvus_server.py, tests/postgres_server.py) and stopped after.

    .venv/bin/python benchmarks/scaling_bench.py [--n 100000] [--queries 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, print_table, write_json  # common puts the repository on sys.path
from index_bench import ground_truth, make_vectors

from lookalike.engine.assess import recall_and_latency
from lookalike.index import create_index
from lookalike.store import Catalog, Item, ItemFilter, Photo

CATEGORIES = 10
MODEL = "bench-model"


def build(backend: str, options: dict, vectors: np.ndarray, categories: np.ndarray, prices: np.ndarray):
    started = time.perf_counter()
    index = create_index(backend, vectors.shape[1], capacity=len(vectors) + 1024, **options)
    for start in range(0, len(vectors), 5000):
        stop = min(start + 5000, len(vectors))
        fields = [{"category": f"c{categories[row]}", "price": float(prices[row])} for row in range(start, stop)]
        index.add(np.arange(start, stop), np.asarray(vectors[start:stop]), fields)
    index.search(np.asarray(vectors[:1]), 10)  # a server-side graph is ready once a search comes back
    return index, time.perf_counter() - started


def measure_index(name: str, backend: str, options: dict, vectors, queries, truth, filtered_truth, allowed,
                  categories, prices) -> dict:
    index, seconds = build(backend, options, vectors, categories, prices)
    plain = recall_and_latency(lambda query: index.search(query[None], 10)[0][0], queries, truth, 10)
    if index.native_filters:
        condition = ItemFilter(category="c0")
        filtered = recall_and_latency(lambda query: index.search(query[None], 10, conditions=condition)[0][0],
                                      queries, filtered_truth, 10)
    else:
        filtered = recall_and_latency(lambda query: index.search(query[None], 10, allowed)[0][0], queries,
                                      filtered_truth, 10)
    index.close()
    return {"index": name, "vectors": len(vectors), "build s": f"{seconds:.0f}", "recall@10": f"{plain.recall:.3f}",
            "p50 ms": f"{plain.p50_ms:.1f}", "filtered recall@10": f"{filtered.recall:.3f}",
            "filtered p50 ms": f"{filtered.p50_ms:.1f}"}


def measure_store(name: str, catalog: Catalog, vectors: np.ndarray, single: int, batched: int) -> dict:
    rng = np.random.default_rng(0)

    def lot(number: int):
        item = Item(f"lot-{number}", title=f"Lot {number}", category=f"c{number % CATEGORIES}", price=float(number % 997),
                    extra={"maker": f"maker {number % 50}"})
        return item, [(Photo(f"/photos/{number}.jpg", 1000, number), np.asarray(vectors[number % len(vectors)]))]

    started = time.perf_counter()
    for number in range(single):
        catalog.write_lots([lot(number)], MODEL)
    one_per_transaction = single / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(single, single + batched, 500):
        catalog.write_lots([lot(number) for number in range(start, start + 500)], MODEL)
    batch_per_second = batched / (time.perf_counter() - started)

    ids = [f"lot-{number}" for number in rng.integers(0, single + batched, 2000)]
    started = time.perf_counter()
    for item_id in ids:
        catalog.get(item_id)
    by_id = len(ids) / (time.perf_counter() - started)
    keys = catalog.keys_matching(ItemFilter())
    started = time.perf_counter()
    for _ in range(500):
        catalog.get_many(rng.choice(keys, 10, replace=False).tolist())
    ten_by_key = 500 / (time.perf_counter() - started)
    return {"store": name, "adds/s, 1 per transaction": f"{one_per_transaction:.0f}",
            "adds/s, 500 per transaction": f"{batch_per_second:.0f}", "lookups/s by id": f"{by_id:.0f}",
            "10-lot reads/s": f"{ten_by_key:.0f}"}


def main() -> None:
    from tests.milvus_server import MilvusStandalone
    from tests.postgres_server import PostgresServer

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--store-lots", type=int, default=5000, help="lots added in 500s (after 500 added one by one)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="scaling-"))
    vectors_path = RESULTS / f"scaling_vectors_{args.n}.npy"
    if not vectors_path.exists():
        make_vectors(args.n, vectors_path)
    vectors = np.load(vectors_path, mmap_mode="r")
    rng = np.random.default_rng(1)
    categories, prices = rng.integers(0, CATEGORIES, args.n), rng.uniform(10, 5000, args.n).round()
    picked = rng.choice(args.n, args.queries, replace=False)
    queries = np.asarray(vectors[picked]) + rng.normal(0, 0.02, (args.queries, vectors.shape[1])).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = ground_truth(vectors, queries)
    allowed = np.flatnonzero(categories == 0)
    filtered_truth = allowed[ground_truth(np.asarray(vectors[allowed]), queries)]

    postgres, milvus = PostgresServer(scratch / "postgres"), MilvusStandalone(scratch / "milvus")
    postgres.start()
    milvus.start()
    try:
        common = (vectors, queries, truth, filtered_truth, allowed, categories, prices)
        index_rows = [
            measure_index("hnsw (in process)", "hnsw", {"m": 16, "ef_construction": 200, "ef_search": 64}, *common),
            measure_index("Milvus 2.3.5 server", "milvus", {"uri": milvus.uri, "m": 16, "ef_construction": 200,
                                                            "ef_search": 64}, *common),
            measure_index("pgvector 0.8.5 (PostgreSQL 16)", "pgvector",
                          {"url": postgres.create_database("vectors"), "m": 16, "ef_construction": 64, "ef_search": 64},
                          *common),
        ]
        print(f"\n{args.n} real-like 1280-d vectors, {args.queries} queries one at a time, filter: one category of "
              f"{CATEGORIES}\n")
        print_table(index_rows, list(index_rows[0]))

        single = 500
        sqlite = Catalog(scratch / "sqlite")
        on_postgres = Catalog(scratch / "pg", store=postgres.create_database("store"))
        store_rows = [measure_store("SQLite (WAL, synchronous=FULL)", sqlite, vectors, single, args.store_lots),
                      measure_store("PostgreSQL 16 (fsync on), pooled", on_postgres, vectors, single, args.store_lots)]
        sqlite.close()
        on_postgres.close()
        print(f"\nstore: {single + args.store_lots} lots of one 1280-d photo each, one thread\n")
        print_table(store_rows, list(store_rows[0]))
        write_json(f"scaling_{args.n}", {"index": index_rows, "store": store_rows, "n": args.n,
                                                "queries": args.queries})
    finally:
        milvus.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
