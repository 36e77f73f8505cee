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
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import print_table, write_json
from index_bench import make_vectors
from threadpoolctl import threadpool_limits

from lookalike.index import HnswIndex
from lookalike.index.base import ApproximateIndex, pad

K = 10
SHARES = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.2)


class Baseline(HnswIndex):
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


class FullCopyScan(HnswIndex):
    """The previous policy: the scan reads the full vectors (no projected copy), up to 11·sqrt(N) matches."""

    def __init__(self, index: HnswIndex):
        self.__dict__.update(index.__dict__)
        self._projection = None


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
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
    baseline = Baseline.__new__(Baseline)
    baseline.__dict__.update(index.__dict__)  # the same graph, searched the old way
    full_copy = FullCopyScan(index)
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
