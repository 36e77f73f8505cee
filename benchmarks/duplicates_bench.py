"""`lookalike duplicates` at 10k lots: time, pairs verified, and the injected duplicates found, in one run.

    .venv/bin/python benchmarks/duplicates_bench.py [--lots 10000]

The catalogue: the verify set's lots (verify_bench.py: stamp lots of 2-6 photos, their mirror-image and
colour-variant lots, opencv-doc scenes), 60 injected duplicates of stamp lots (30 imported twice: the same
main photo under another id; 30 relisted: another of the lot's studio photos, alone, as a new lot), and
Fashion-MNIST product photos (Debian dataset-fashion-mnist) up to --lots: many near-identical garments on
white, which the CNN finds alike, so many pairs reach verification. A found group is right when it is one
injected pair (the lot and its duplicate); any other group is a false one.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from common import RESULTS, print_table, write_json
from make_same_item_set import make_fashion_set
from verify_bench import make_set, read_rows

from lookalike import Engine

INJECTED = 30


def write_catalogue(root: Path, fashion: Path, lots: int) -> tuple[Path, set[frozenset[str]]]:
    rows = read_rows(root / "catalogue" / "metadata-lookalikes.csv")
    for row in rows:
        row["image"] = str(root / "catalogue" / row["image"]).replace("|", "|" + str(root / "catalogue") + "/")
    stamps = [row for row in rows if row["id"].startswith("stamp/") and "|" in row["image"]]
    expected = set()
    for number, lot in enumerate(stamps[: 2 * INJECTED]):
        photos = lot["image"].split("|")
        relisted = number % 2 == 1
        duplicate = {"id": f"{'relisted' if relisted else 'again'}/{lot['id']}",
                     "image": photos[-1] if relisted else photos[0], "title": lot["title"], "category": lot["category"]}
        rows.append(duplicate)
        expected.add(frozenset((lot["id"], duplicate["id"])))
    garments = read_rows(fashion / "catalogue" / "metadata.csv")
    for garment in garments[: max(0, lots - len(rows))]:
        rows.append({"id": garment["id"], "image": str(fashion / "catalogue" / garment["image"]), "title": garment["title"],
                     "category": garment["category"]})
    path = root / "catalogue" / "metadata-duplicates.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "image", "title", "category"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=RESULTS / "verify-set")
    parser.add_argument("--lots", type=int, default=10_000)
    args = parser.parse_args()
    make_set(args.set)
    fashion = RESULTS / "fashion-10k"
    if not (fashion / "catalogue" / "metadata.csv").exists():
        make_fashion_set(fashion, args.lots, queries=1)
    metadata, expected = write_catalogue(args.set, fashion, args.lots)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(Path(scratch) / "catalog", query_mode="single")
        report = engine.index_sources([], metadata)
        print(f"indexed {engine.count()} lots ({report.embedded} photos)", flush=True)
        for neighbours, min_score in ((5, 0.75), (5, 0.85)):
            engine._duplicates_cache = {}  # each setting measured from cold
            engine.verifier._cache.clear()
            started = time.perf_counter()
            found = engine.duplicates(neighbours, min_score)
            seconds = time.perf_counter() - started
            groups = [frozenset(group.ids) for group in found.groups]
            right = sum(group in expected for group in groups)
            relisted = sum(group in expected for group in groups if any(i.startswith("relisted/") for i in group))
            rows.append({"lots": found.lots, "neighbours": neighbours, "min score": min_score,
                         "pairs verified": found.verified_pairs, "seconds": round(seconds, 1),
                         "s per 10k lots": round(seconds / found.lots * 10_000, 1), "groups": len(groups),
                         "right groups": right, "false groups": len(groups) - right,
                         "double imports found": f"{right - relisted}/{INJECTED}", "relisted found": f"{relisted}/{INJECTED}"})
            print(rows[-1], flush=True)
        engine.close()
    print("\nlookalike duplicates: injected duplicates among look-alike lots and Fashion-MNIST garments\n")
    print_table(rows, list(rows[0]))
    write_json("duplicates_bench", {"rows": rows})


if __name__ == "__main__":
    main()
