"""Which HNSW library: hnswlib, faiss and usearch side by side on the same
vectors (recall@10 against exact, build time, single-query latency).

Vectors look like ours: EfficientNet-Lite0 features of the demo photos and of
crops of them (19 views per photo), grown to N by adding Gaussian noise
(sigma 0.01 per dimension, about 0.36 in norm before re-normalising) to
randomly chosen real vectors, so that neighbourhoods stay realistic clusters.

    .venv/bin/python benchmarks/hnsw_choice.py [--n 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import demo_photo_folder, print_table, write_json

from lookalike.encoders import load_encoder
from lookalike.encoders.views import query_views
from lookalike.engine.assess import recall_and_latency
from lookalike.images import decode_image

M, EF_CONSTRUCTION, EF_SEARCH, K = 16, 200, 64, 10


def real_features() -> np.ndarray:
    encoder = load_encoder()
    arrays = []
    for path in sorted((demo_photo_folder() / "photos").rglob("*.jpg")):
        arrays += [encoder.preprocess(view) for view in query_views(decode_image(path))]
    return np.concatenate([encoder.embed_arrays(np.stack(arrays[i : i + 64])) for i in range(0, len(arrays), 64)])


def grow(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = real[rng.integers(0, len(real), n - len(real))]
    grown = base + rng.normal(0, 0.01, base.shape).astype(np.float32)
    vectors = np.concatenate([real, grown])
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def run_hnswlib(data, queries):
    import hnswlib

    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(len(data), M=M, ef_construction=EF_CONSTRUCTION)
    index.add_items(data, np.arange(len(data)))
    built = time.perf_counter() - started
    index.set_ef(EF_SEARCH)
    index.set_num_threads(1)
    return built, lambda q: index.knn_query(q, k=K)[0]


def run_faiss(data, queries):
    import faiss

    faiss.omp_set_num_threads(2)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(data.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(data)
    built = time.perf_counter() - started
    index.hnsw.efSearch = EF_SEARCH
    faiss.omp_set_num_threads(1)
    return built, lambda q: index.search(q, K)[1]


def run_usearch(data, queries):
    from usearch.index import Index

    started = time.perf_counter()
    index = Index(ndim=data.shape[1], metric="ip", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION,
                  expansion_search=EF_SEARCH)
    index.add(np.arange(len(data)), data, threads=2)
    built = time.perf_counter() - started
    return built, lambda q: index.search(q, K, threads=1).keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    real = real_features()
    data = grow(real, args.n)
    rng = np.random.default_rng(1)
    queries = data[rng.choice(len(data), args.queries, replace=False)] + rng.normal(0, 0.01, (args.queries, data.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :K]
    rows = []
    for name, runner in (("hnswlib", run_hnswlib), ("faiss IndexHNSWFlat", run_faiss), ("usearch", run_usearch)):
        built, search = runner(data, queries)
        measured = recall_and_latency(lambda query, search=search: np.asarray(search(query[None])).reshape(-1)[:K], queries, truth, K)
        rows.append({"library": name, "N": len(data), "build s (2 threads)": f"{built:.1f}",
                     "recall@10": f"{measured.recall:.3f}", "p50 ms": f"{measured.p50_ms:.3f}", "p99 ms": f"{measured.p99_ms:.3f}"})
    print(f"{len(real)} real vectors grown to {len(data)}, M={M}, efConstruction={EF_CONSTRUCTION}, efSearch={EF_SEARCH}, "
          "1 query thread\n")
    print_table(rows, list(rows[0]))
    write_json("hnsw_choice", {"rows": rows})


if __name__ == "__main__":
    main()
