"""Lots with several photos, side by side in one run: a lot indexed by its main photo only vs all its photos,
and a new item searched with 1, 2 or 3 photos (one query), on the set benchmarks/make_lots_set.py writes.

    .venv/bin/python benchmarks/lots_bench.py [--set benchmarks/results/lots] [--query-mode crops]

recall@k: a query's lot in the top k; each lot is answered once, however many of its photos match.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import RESULTS, print_table, write_json
from make_lots_set import make_lots_set

from lookalike import Engine
from lookalike.engine import lots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=RESULTS / "lots")
    parser.add_argument("--query-mode", default="crops")
    parser.add_argument("--extra-photos", choices=["studio", "mixed"], default="studio",
                        help="how the set is made when it does not exist yet (see make_lots_set.py)")
    parser.add_argument("--second-photo-weights", default=str(lots.SECOND_PHOTO_WEIGHT),
                        help="comma-separated weights of a lot's second-best photo in its rank, each measured with all "
                             f"photos indexed (default {lots.SECOND_PHOTO_WEIGHT}, the engine's; 0: the best photo alone)")
    parser.add_argument("--verify-top", type=int, default=0,
                        help="verify the N best lots with local features (default 0: the CNN's lot scores alone)")
    args = parser.parse_args()
    weights = [float(weight) for weight in args.second_photo_weights.split(",")]
    if not (args.set / "queries-3.csv").exists():
        make_lots_set(args.set, extra=args.extra_photos)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for indexed, metadata in (("main photo only", "metadata-main.csv"), ("all photos", "metadata.csv")):
            engine = Engine(Path(scratch) / metadata, query_mode=args.query_mode, verify_top=args.verify_top)
            report = engine.index_sources([], args.set / "catalogue" / metadata)
            for weight, photos in [(weight, photos) for weight in (weights if indexed == "all photos" else [0.0])
                                   for photos in (1, 2, 3)]:
                lots.SECOND_PHOTO_WEIGHT = weight
                started = time.perf_counter()
                evaluation = engine.evaluate(args.set / f"queries-{photos}.csv", k=10)
                seconds = time.perf_counter() - started
                rows.append({"lots indexed by": indexed, "second photo weight": weight,
                             "photos indexed": report.embedded, "query photos": photos,
                             "queries": evaluation.queries, "r@1": f"{evaluation.recall[1]:.3f}",
                             "r@5": f"{evaluation.recall[5]:.3f}", "mAP@10": f"{evaluation.map_at_k:.3f}",
                             "ms/query": f"{seconds / evaluation.queries * 1000:.0f}"})
                print(rows[-1], flush=True)
            engine.close()
    print(f"\nlots set {args.set}, query mode {args.query_mode}; several query photos fused by the mean of their "
          "best-photo scores\n")
    print_table(rows, list(rows[0]))
    name = f"lots_bench_{args.extra_photos}_{args.query_mode}" + ("_second_photo" if len(weights) > 1 else "")
    write_json(name, {"set": str(args.set), "query_mode": args.query_mode, "verify_top": args.verify_top, "rows": rows})


if __name__ == "__main__":
    main()
