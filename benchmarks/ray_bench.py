"""Distributed embedding with Ray Data against the single-process path, side by
side in one run, indexing the demo photos into fresh catalogues.

    .venv/bin/python benchmarks/ray_bench.py [--images 439]

On one 2-core machine Ray has nothing to spread the work over and costs its
start-up and serialisation; the figure is here to be honest about that.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import demo_photo_folder, print_table, write_json

from lookalike.engine import Engine


def run(metadata, ray: str | None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(os.path.join(scratch, "catalog"))
        _ = engine.encoder  # model load and export outside the timing
        started = time.perf_counter()
        report = engine.index_sources([], metadata, ray=ray)
        seconds = time.perf_counter() - started
        engine.close()
    return {"path": "Ray Data, local (actors on this machine)" if ray else "single process",
            "images": report.embedded, "seconds": f"{seconds:.1f}", "img/s": f"{report.embedded / seconds:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=439)
    args = parser.parse_args()
    metadata = demo_photo_folder() / "metadata.csv"
    lines = metadata.read_text().splitlines()[: args.images + 1]
    with tempfile.TemporaryDirectory() as scratch:
        subset = os.path.join(scratch, "subset.csv")
        with open(subset, "w") as handle:
            handle.write("\n".join(lines).replace(",photos/", f",{metadata.parent}/photos/") + "\n")
        rows = [run(subset, None), run(subset, "local")]
    print(f"{os.cpu_count()} cores, default model, decode + embed + catalogue writes (Ray: start-up included)\n")
    print_table(rows, list(rows[0]))
    write_json("ray", {"rows": rows})


if __name__ == "__main__":
    main()
