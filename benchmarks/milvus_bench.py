"""Milvus Lite against the in-process backends on the same vectors, side by
side in one run: build time, recall@10 against exact, query latency, disk.

    .venv/bin/python benchmarks/milvus_bench.py [--n 20000] [--queries 30]

Vectors are real Lite0 features (benchmarks/index_bench.py builds and caches
them: Fashion-MNIST products and the demo photos).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from common import print_table, write_json
from index_bench import base_features

from lookalike.engine.assess import recall_and_latency
from lookalike.index import ExactIndex, create_index


def folder_size(path: str) -> float:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 1e6


def measure(backend: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    scratch = tempfile.mkdtemp()
    options = {"uri": os.path.join(scratch, "milvus.db")} if backend == "milvus" else {}
    started = time.perf_counter()
    index = create_index(backend, vectors.shape[1], **options)
    for start in range(0, len(vectors), 5000):
        index.add(np.arange(start, min(start + 5000, len(vectors))), vectors[start : start + 5000])
    build = time.perf_counter() - started
    measured = recall_and_latency(lambda query: index.search(query[None], 10)[0][0], queries, truth, 10)
    index.save(os.path.join(scratch, "saved"))
    index.close()
    return {"backend": "milvus (Milvus Lite 3.2, embedded)" if backend == "milvus" else backend, "items": len(vectors),
            "build s": f"{build:.1f}", "recall@10": f"{measured.recall:.3f}", "p50 ms": f"{measured.p50_ms:.2f}",
            "p99 ms": f"{measured.p99_ms:.2f}", "disk MB": f"{folder_size(scratch):.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    vectors = base_features()[: args.n].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), args.queries, replace=False)] + rng.normal(0, 0.01, (args.queries, vectors.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = ExactIndex(vectors.shape[1])
    exact.add(np.arange(len(vectors)), vectors)
    truth = exact.search(queries, 10)[0]
    rows = [measure(backend, vectors, queries, truth) for backend in ("exact", "hnsw", "milvus")]
    print(f"{len(vectors)} real Lite0 vectors, {args.queries} queries, one at a time, {os.cpu_count()} cores\n")
    print_table(rows, list(rows[0]))
    write_json("milvus", {"rows": rows})


if __name__ == "__main__":
    main()
