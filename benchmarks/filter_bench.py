"""Filtered searches on the hnsw backend: for filters matching a share of the photos, the latency (p50, p99, one
thread, one query at a time as a server runs them) and recall@10 of the search policy, ours beside the baseline in
one run on one graph:

- baseline: the policy before (matches up to 500 scanned with vectors read through hnswlib, about 90 us each; the
  graph with a filter above);
- full copy: the previous policy, matches scanned from the contiguous copy of the full vectors up to 11·sqrt(N);
- ours: matches scanned up to HnswIndex.exact_filter_max_rows, through the 128-d projected copy with a shortlist
  re-ranked exactly once the index is large, the graph with a filter above;

plus, per share, what each path alone costs (our scan, the graph with the filter), which is where the threshold
comes from. Recall@10 is against a full scan of the matches' full vectors. Filters are random subsets of the
photos: the graph's worst case (a category, whose photos lie near each other, is easier for it).

    .venv/bin/python benchmarks/filter_bench.py [--n 200000] [--queries 100]

With --store it measures the other half of a filtered search, finding the matching photos in the catalogue: SQL
(the baseline) beside the in-memory filter columns, on a SQLite catalogue of --n lots of one photo each
(categories of 0.1-20% of the lots, log-normal prices, 1,000 makers in the JSON fields):

    .venv/bin/python benchmarks/filter_bench.py --store --n 1000000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
from common import print_table, write_json
from index_bench import make_vectors
from threadpoolctl import threadpool_limits

from lookalike.index import HnswIndex
from lookalike.index.base import ApproximateIndex, pad
from lookalike.store import Catalog, ItemFilter

K = 10
SHARES = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.2)


class SameGraph(HnswIndex):
    """Another policy over an index's own graph and copies (shared, not copied)."""

    def __init__(self, index: HnswIndex):
        self.__dict__.update(index.__dict__)


class Baseline(SameGraph):
    """The policy before, as it was: the matches' vectors come from hnswlib one by one, scanned up to 500 of them."""

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(self._graph.get_items(keys), dtype=np.float32)

    exact = ApproximateIndex.exact

    def _search(self, queries, k: int, allowed, conditions, exclude_keys):
        allowed_keys = np.asarray([key for key in allowed.tolist() if self.contains(key)], dtype=np.int64)
        if len(allowed_keys) <= 500:
            return self.exact(queries, k, allowed_keys)
        found = self.approximate(queries, min(k, len(allowed_keys)), set(allowed_keys.tolist()))
        return pad(*found, k) if found is not None else self.exact(queries, k, allowed_keys)


class FullCopyScan(SameGraph):
    """The previous policy: the scan reads the full vectors (no projected copy), up to 11·sqrt(N) matches."""

    def __init__(self, index: HnswIndex):
        super().__init__(index)
        self._projection = None


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


CATEGORY_SHARES = {"a 0.1% category": 0.001, "a 0.5% category": 0.005, "a 1% category": 0.01,
                   "a 5% category": 0.05, "a 20% category": 0.2}


def store_main(n: int, repeats: int = 5) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        Catalog(scratch).close()
        draw, categories, start = rng.random(n), np.full(n, "other", object), 0.0
        for name, share in CATEGORY_SHARES.items():
            categories[(draw >= start) & (draw < start + share)] = name
            start += share
        prices, makers = np.exp(rng.normal(5, 1, n)), rng.integers(0, 1000, n)
        database = sqlite3.connect(Path(scratch) / "catalog.sqlite")
        database.executemany("INSERT INTO items(key, id, title, category, price, currency, extra, added_at) "
                             "VALUES(?, ?, 'a lot', ?, ?, 'EUR', ?, '2026-11-30')",
                             ((key + 1, f"lot-{key}", categories[key], float(prices[key]),
                               json.dumps({"maker": f"maker {makers[key]}", "period": "1900s"})) for key in range(n)))
        database.executemany("INSERT INTO photos(key, item_key, position) VALUES(?, ?, 0)", ((key + 1, key + 1) for key in range(n)))
        database.execute("UPDATE meta SET value = '1' WHERE key = 'generation'")
        database.commit()
        database.close()
        in_sql, in_memory = Catalog(scratch), Catalog(scratch)
        in_sql._columns_usable = False  # the baseline: every filter in SQL
        low, mid, high = np.quantile(prices, [0.5, 0.51, 0.7])
        filters = {**{name: ItemFilter(category=name) for name in CATEGORY_SHARES},
                   "price, 1% of lots": ItemFilter(min_price=low, max_price=mid),
                   "price, 20% of lots": ItemFilter(min_price=low, max_price=high),
                   "has a price (every estimate asks it)": ItemFilter(has_price=True),
                   "a maker (0.1%)": ItemFilter(fields=(("maker", "maker 7"),)),
                   "a 1% category and a maker": ItemFilter(category="a 1% category", fields=(("maker", "maker 7"),))}
        started = time.perf_counter()
        in_memory.read_filter_columns()  # as serve does at its start
        columns_read_s = time.perf_counter() - started
        rows = []
        for name, item_filter in filters.items():
            started = time.perf_counter()
            first = in_memory.photo_keys_matching(item_filter)  # a field's column is read the first time
            first_ms = (time.perf_counter() - started) * 1000
            timings: dict[str, list[float]] = {"sql": [], "memory": []}
            for _ in range(repeats):
                for label, catalog in (("sql", in_sql), ("memory", in_memory)):
                    began = time.perf_counter()
                    found = catalog.photo_keys_matching(item_filter)
                    timings[label].append((time.perf_counter() - began) * 1000)
            assert sorted(found.tolist()) == sorted(first.tolist()) == sorted(in_sql.photo_keys_matching(item_filter).tolist())
            rows.append({"filter": name, "matches": len(found), "SQL p50 ms": percentile(timings["sql"], 50),
                         "in memory p50 ms": percentile(timings["memory"], 50),
                         "in memory, first use ms": round(first_ms, 2)})
            print(rows[-1], flush=True)
    print(f"\nfinding the photos a filter matches, {n:,} lots of one photo on SQLite; the filter columns read in "
          f"{columns_read_s:.1f} s (at serve's start, or in the background after the first filtered search)\n")
    print_table(rows, list(rows[0]))
    write_json(f"filter_store_{n}", {"n": n, "repeats": repeats, "columns_read_s": round(columns_read_s, 2), "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--store", action="store_true", help="time finding the matching photos in the catalogue instead")
    args = parser.parse_args()
    if args.store:
        store_main(args.n)
        return
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "vectors.npy"
        make_vectors(args.n + args.queries, path, seed=3)
        vectors = np.load(path, mmap_mode="r")
        queries = np.asarray(vectors[args.n :])
        index = HnswIndex(vectors.shape[1], capacity=args.n)
        started = time.perf_counter()
        for start in range(0, args.n, 20_000):
            stop = min(start + 20_000, args.n)
            index.add(np.arange(start, stop), np.asarray(vectors[start:stop]))
        build_s = time.perf_counter() - started
    baseline, full_copy = Baseline(index), FullCopyScan(index)
    keys = index.keys()
    rows = []
    with threadpool_limits(1):
        for share in SHARES:
            allowed = np.sort(rng.choice(keys, max(1, int(share * len(keys))), replace=False))
            accept = set(allowed.tolist())
            timings: dict[str, list[float]] = {"baseline": [], "full copy": [], "ours": [], "scan": [], "graph": []}
            recalls: dict[str, list[float]] = {"baseline": [], "full copy": [], "ours": [], "graph": []}
            allowed_vectors = index.vectors_for(allowed)
            for query in queries:
                truth = set(allowed[np.argsort(-(allowed_vectors @ query), kind="stable")[:K]].tolist())
                for name, searched in (("baseline", baseline), ("full copy", full_copy), ("ours", index)):
                    began = time.perf_counter()
                    found = searched.search(query[None], K, allowed)[0][0]
                    timings[name].append((time.perf_counter() - began) * 1000)
                    recalls[name].append(len(truth & set(found.tolist())) / min(K, len(allowed)))
                began = time.perf_counter()
                index.exact(query[None], K, allowed)
                timings["scan"].append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                found = index.approximate(query[None], min(K, len(allowed)), accept)
                timings["graph"].append((time.perf_counter() - began) * 1000)
                recalls["graph"].append(len(truth & set(found[0][0].tolist())) / min(K, len(allowed)) if found else 0.0)
            rows.append({
                "share matched": f"{share:.2%}", "matches": len(allowed),
                "baseline p50 ms": percentile(timings["baseline"], 50), "baseline p99 ms": percentile(timings["baseline"], 99),
                "baseline recall": round(float(np.mean(recalls["baseline"])), 3),
                "full copy p50 ms": percentile(timings["full copy"], 50),
                "full copy p99 ms": percentile(timings["full copy"], 99),
                "ours p50 ms": percentile(timings["ours"], 50), "ours p99 ms": percentile(timings["ours"], 99),
                "ours recall": round(float(np.mean(recalls["ours"])), 3),
                "ours scan p50 ms": percentile(timings["scan"], 50), "graph p50 ms": percentile(timings["graph"], 50),
                "graph recall": round(float(np.mean(recalls["graph"])), 3)})
            print(rows[-1], flush=True)
    print(f"\nfiltered search, hnsw, {args.n:,} photos of 1280-d, {args.queries} queries, k={K}, one thread; build "
          f"{build_s:.0f} s; ours scans up to {index.exact_filter_max_rows:,} matches\n")
    print_table(rows, list(rows[0]))
    write_json(f"filter_{args.n}", {"n": args.n, "queries": args.queries, "k": K, "build_s": round(build_s, 1),
                                    "exact_filter_max_rows": index.exact_filter_max_rows,
                                    "full_copy_max_rows": full_copy.exact_filter_max_rows, "rows": rows})


if __name__ == "__main__":
    main()
