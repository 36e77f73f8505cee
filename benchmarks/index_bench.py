"""Index backends side by side at catalogue scale: build time, memory, recall@10
against exact search, single-query latency (1 thread) and batch QPS (2 threads).

Vectors look like ours. The base is real EfficientNet-Lite0 features: 20,000
Fashion-MNIST product images (Debian dataset-fashion-mnist, upscaled) and the
demo photos with their 18 crops each. It is grown to N by adding Gaussian noise
(sigma drawn per copy from 0.004-0.04 per dimension, cosine 0.99-0.6 to the
source) to randomly chosen real vectors, so every real vector gets a cluster of
neighbours at spread-out distances, as a catalogue's similar items would. Queries are real vectors with fresh noise.
Each backend runs in its own process, so memory figures do not mix.

    .venv/bin/python benchmarks/index_bench.py --n 100000
    .venv/bin/python benchmarks/index_bench.py --n 1000000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import RESULTS, demo_photo_folder, print_table, write_json

FASHION = Path(__file__).resolve().parents[1] / "data/debs/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
K = 10
GENERATOR_VERSION = "2"  # 1: sigma 0.01 for every copy (near-ties at 1M); 2: sigma per copy
CONFIGS = {
    "exact": ("exact", {}),
    "exact-f16": ("exact", {"dtype": "float16"}),
    "hnsw": ("hnsw", {"m": 16, "ef_construction": 200, "ef_search": 64}),
    "hnsw-pca": ("hnsw-pca", {"components": 256, "rerank": 4, "m": 16, "ef_construction": 200, "ef_search": 128}),
    "annoy": ("annoy", {"n_trees": 50, "search_k": 50_000}),
}
#: Search-time settings measured on one build, so each backend is compared at several recalls.
SWEEPS = {"hnsw": ("ef_search", [32, 64, 128]), "annoy": ("search_k", [10_000, 50_000, 200_000])}


def base_features() -> np.ndarray:
    cache = RESULTS / "base_features.npy"
    if cache.exists():
        return np.load(cache)
    from PIL import Image

    from lookalike.encoders import load_encoder
    from lookalike.encoders.views import query_views
    from lookalike.images import decode_image

    encoder = load_encoder()

    def model_inputs():
        """One preprocessed array at a time: ~34k of them as float arrays would need 20 GB."""
        for path in sorted((demo_photo_folder() / "photos").rglob("*.jpg")):
            for view in query_views(decode_image(path)):
                yield encoder.preprocess(view)
        if not FASHION.exists():
            print("dataset-fashion-mnist is missing (make setup): base is the demo photos only", file=sys.stderr)
            return
        with gzip.open(FASHION) as handle:
            pixels = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:20_000]
        for image in pixels:
            yield encoder.preprocess(Image.fromarray(255 - image).convert("RGB"))

    parts, batch = [], []
    for array in model_inputs():
        batch.append(array)
        if len(batch) == 64:
            parts.append(encoder.embed_arrays(np.stack(batch)))
            batch = []
    if batch:
        parts.append(encoder.embed_arrays(np.stack(batch)))
    features = np.concatenate(parts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(cache, features)
    return features


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def make_vectors(n: int, path: Path, seed: int = 0) -> None:
    base = base_features()
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, base.shape[1]))
    out[: min(n, len(base))] = base[:n]
    for start in range(len(base), n, 100_000):
        stop = min(start + 100_000, n)
        source = base[rng.integers(0, len(base), stop - start)]
        # Each copy gets its own noise level, so the copies of one real vector lie at spread-out
        # distances instead of forming a shell of near-ties (which made recall@10 meaningless at 1M).
        sigma = rng.uniform(0.004, 0.04, (len(source), 1)).astype(np.float32)
        out[start:stop] = unit(source + sigma * rng.normal(0, 1, source.shape).astype(np.float32))
    out.flush()


def ground_truth(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), K), np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = queries @ np.asarray(vectors[start : start + 100_000]).T
        merged = np.concatenate([best_scores, scores], axis=1)
        rows = np.concatenate([best_rows, np.arange(start, start + scores.shape[1])[None].repeat(len(queries), 0)], axis=1)
        order = np.argsort(-merged, axis=1)[:, :K]
        best_scores, best_rows = np.take_along_axis(merged, order, 1), np.take_along_axis(rows, order, 1)
    return best_rows


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(config: str, vectors_path: Path, queries_path: Path, truth_path: Path, single_queries: int) -> list[dict]:
    from lookalike.index import create_index

    backend, options = CONFIGS[config]
    vectors = np.load(vectors_path, mmap_mode="r")
    queries, truth = np.load(queries_path), np.load(truth_path)
    before = rss_mb()
    started = time.perf_counter()
    # A backend that re-ranks reads the full vectors from disk, as the engine reads them from the catalogue store.
    on_disk = np.load(vectors_path, mmap_mode="r")
    extra = {len(truth) + 10**9: queries[0]}  # the item added below to time add-then-search

    def stored_vectors(keys) -> np.ndarray:
        return np.stack([extra[key] if key in extra else np.asarray(on_disk[key], dtype=np.float32)
                         for key in np.asarray(keys).tolist()])

    index = create_index(backend, vectors.shape[1], capacity=len(vectors) + 1024, vector_source=stored_vectors, **options)
    for start in range(0, len(vectors), 50_000):
        index.add(np.arange(start, min(start + 50_000, len(vectors))), np.array(vectors[start : start + 50_000]))
    if backend == "annoy":
        index.build()
    built = time.perf_counter() - started
    del vectors
    memory = rss_mb() - before
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        index.save(Path(scratch) / "index")
        disk = sum(f.stat().st_size for f in (Path(scratch) / "index").rglob("*") if f.is_file()) / 2**20

    attribute, values = SWEEPS.get(config, (None, [None]))
    measured = []
    for value in values:
        if attribute:
            setattr(index, attribute, value)
        measured.append({"config": f"{config} {attribute}={value}" if attribute else config,
                         **search_figures(index, backend, queries, truth, single_queries)})
    if attribute:
        setattr(index, attribute, options[attribute])
    crossover = filter_crossover(index, queries[:20]) if config == "hnsw" else []

    started = time.perf_counter()
    index.add([len(truth) + 10**9], queries[:1])
    newest, _ = index.search(queries[:1], 1)
    add_ms = (time.perf_counter() - started) * 1000
    common = {"build_s": round(built, 1), "rss_mb": round(memory), "disk_mb": round(disk),
              "add_then_found_ms": round(add_ms, 2), "added_found": bool(newest[0, 0] == len(truth) + 10**9),
              "filter_crossover": crossover}
    return [{**row, **common} for row in measured]


def search_figures(index, backend: str, queries: np.ndarray, truth: np.ndarray, single_queries: int) -> dict:
    from threadpoolctl import threadpool_limits

    from lookalike.engine.assess import recall_and_latency

    with threadpool_limits(1):
        single = recall_and_latency(lambda query: index.search(query[None], K)[0][0], queries[:single_queries], truth, K)
    batch = queries[: max(single_queries, 200)]
    started = time.perf_counter()
    if backend == "exact":
        index.search(batch, K)  # one BLAS call on 2 threads
    else:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda chunk: index.search(chunk, K), np.array_split(batch, 2)))
    qps = len(batch) / (time.perf_counter() - started)
    return {"recall@10": round(single.recall, 3), "p50_ms": round(single.p50_ms, 3), "p99_ms": round(single.p99_ms, 3),
            "qps_2_threads": round(qps, 1)}


def filter_crossover(index, queries: np.ndarray) -> list[dict]:
    """For filters matching a share of the items: exact scan of the matches vs the graph with a filter."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    keys = index.keys()
    rows = []
    with threadpool_limits(1):
        for share in (0.0005, 0.001, 0.005, 0.01, 0.05):
            allowed = rng.choice(keys, max(10, int(share * len(keys))), replace=False)
            accept = set(allowed.tolist())
            timings = {"exact scan": [], "graph + filter": []}
            overlap = []
            for query in queries:
                started = time.perf_counter()
                exact_keys, _ = index.exact(query[None], K, allowed)
                timings["exact scan"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                found = index.approximate(query[None], K, accept)
                timings["graph + filter"].append((time.perf_counter() - started) * 1000)
                if found is not None:
                    overlap.append(len(set(found[0][0].tolist()) & set(exact_keys[0].tolist())) / K)
            rows.append({"share": share, "exact_ms": round(float(np.median(timings["exact scan"])), 3),
                         "graph_ms": round(float(np.median(timings["graph + filter"])), 3),
                         "graph_recall": round(float(np.mean(overlap)), 3) if overlap else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = RESULTS / f"index-{args.n}"
    if args.worker:
        print(json.dumps(worker(args.worker, work / "vectors.npy", work / "queries.npy", work / "truth.npy", args.queries)))
        return
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "generator-version"
    if not (work / "truth.npy").exists() or not marker.exists() or marker.read_text() != GENERATOR_VERSION:
        make_vectors(args.n, work / "vectors.npy")
        base = base_features()
        rng = np.random.default_rng(1)
        queries = unit(base[rng.choice(len(base), args.queries, replace=False)] +
                       rng.normal(0, 0.01, (args.queries, base.shape[1])).astype(np.float32))
        np.save(work / "queries.npy", queries)
        np.save(work / "truth.npy", ground_truth(np.load(work / "vectors.npy", mmap_mode="r"), queries))
        marker.write_text(GENERATOR_VERSION)
    rows = []
    for config in args.configs.split(","):
        result = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--queries", str(args.queries),
                                 "--worker", config], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{config} failed: {result.stderr[-500:]}", file=sys.stderr)
            continue
        rows += json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    annoy = [row for row in rows if row["config"].startswith("annoy")]
    for row in rows:
        same_recall = [a for a in annoy if a["recall@10"] >= row["recall@10"] - 0.005]
        faster = min(a["p50_ms"] for a in same_recall) / row["p50_ms"] if same_recall else None
        row["vs annoy p50"] = f"{faster:.1f}x" if faster and not row["config"].startswith(("annoy", "exact")) else ""
    print(f"\nN={args.n:,} vectors of 1280-d (real Lite0 features grown by noise), {args.queries} queries, "
          f"{os.cpu_count()} cores\n")
    print_table(rows, ["config", "build_s", "rss_mb", "disk_mb", "recall@10", "p50_ms", "p99_ms", "qps_2_threads",
                       "add_then_found_ms", "vs annoy p50"])
    for row in rows:
        if row.get("filter_crossover"):
            print("\nfiltered search, hnsw: share of items matching the filter vs median latency (1 thread)\n")
            print_table(row["filter_crossover"], ["share", "exact_ms", "graph_ms", "graph_recall"])
            break
    write_json(f"index_{args.n}", {"n": args.n, "configs": CONFIGS, "rows": rows})
    shutil.rmtree(work / "scratch", ignore_errors=True)


if __name__ == "__main__":
    main()
