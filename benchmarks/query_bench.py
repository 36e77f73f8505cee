"""Query latency (decode + embed + search, ms) and same-item accuracy on the
demo catalogue, for each model and query mode, in one run.

Queries are new "phone photos" of 100 catalogue items (another background,
scale, rotation, colour, JPEG 60; lookalike.demo.make_phone_photo),
saved at 640 px and at a phone camera's 3000x3000.

    .venv/bin/python benchmarks/query_bench.py [--queries N]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
from common import demo_photo_folder, print_table, write_json
from PIL import Image

from lookalike.demo import backgrounds, list_stamps, load_cutout, make_phone_photo
from lookalike.engine import Engine


def phone_photos(count: int, seed: int = 99) -> list[tuple[str, bytes]]:
    stamps = list_stamps()
    rng = np.random.default_rng(seed)
    pool = backgrounds()
    chosen = rng.choice(len(stamps), count, replace=False)
    return [(stamps[i].id, make_phone_photo(load_cutout(stamps[i]), pool[int(rng.integers(len(pool)))], rng)) for i in chosen]


def upscale(photo: bytes, side: int = 3000) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo)).resize((side, side), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def measure(engine: Engine, photos) -> dict:
    latencies, ranks = [], []
    for item_id, photo in photos:
        started = time.perf_counter()
        hits = engine.search(photo, k=10).hits
        latencies.append((time.perf_counter() - started) * 1000)
        ids = [hit.id for hit in hits]
        ranks.append(ids.index(item_id) + 1 if item_id in ids else 99)
    ranks = np.asarray(ranks)
    return {"p50 ms": f"{np.percentile(latencies, 50):.0f}", "p99 ms": f"{np.percentile(latencies, 99):.0f}",
            "rank-1": f"{np.mean(ranks == 1):.2f}", "top-5": f"{np.mean(ranks <= 5):.2f}", "top-10": f"{np.mean(ranks <= 10):.2f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    metadata = demo_photo_folder() / "metadata.csv"
    photos = phone_photos(args.queries)
    big_photos = [(item_id, upscale(photo)) for item_id, photo in photos[:20]]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in ("efficientnet-lite0:avg:int8", "efficientnet-lite0:avg"):
            engine = Engine(os.path.join(scratch, spec.replace(":", "-")), model=spec)
            engine.index_sources([], metadata)
            for mode in ("single", "crops-light", "crops"):
                engine.query_mode = mode
                engine.search(photos[0][1])  # warm up
                rows.append({"model": spec, "query mode": mode, "photo": "640 px", **measure(engine, photos)})
                big = measure(engine, big_photos)
                rows.append({"model": spec, "query mode": mode, "photo": "3000 px",
                             "p50 ms": big["p50 ms"], "p99 ms": big["p99 ms"]})
            engine.close()
    print(f"{args.queries} phone photos of demo items, catalogue of {len(metadata.read_text().splitlines()) - 1}, "
          f"{os.cpu_count()} cores, exact index\n")
    print_table(rows, ["model", "query mode", "photo", "p50 ms", "p99 ms", "rank-1", "top-5", "top-10"])
    write_json("query", {"rows": rows})


if __name__ == "__main__":
    main()
