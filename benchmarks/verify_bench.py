"""Geometric verification of the shortlist, measured: which local features, which geometric fit, the
same-object threshold, and what re-ranking the top 10 does to retrieval. Side by side in one run.

    .venv/bin/python benchmarks/verify_bench.py [--set benchmarks/results/verify-set] [--query-mode crops]

The set is the lots set (make_lots_set.py: stamp lots of 2-6 photos, opencv-doc's chessboard and real
pairs) plus lookalike lots for every stamp that has new-item photos: its mirror image and a colour variant
(hue turned by 120 degrees), each a lot of its own. Stamps whose mirror image is the same picture
(symmetric ones) get no mirror lot, grey ones no colour variant: those lookalikes are not other objects.

Part 1, pairs: every new-item photo against its own lot's main photo (same object) and against the mirror
lot, the colour-variant lot and the best-scoring other lot by the CNN (lookalikes, a different object).
Part 2, retrieval: Engine.search on the catalogue with the lookalike lots in it, verification off vs on,
and the fusion weight swept over the verified top 10.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, print_table, write_json
from make_lots_set import make_lots_set
from PIL import Image, ImageOps

from lookalike import Engine
from lookalike.engine import verification
from lookalike.matching import extract, local_features, verify

KINDS = ("rootsift", "sift", "orb")
METHODS = ("magsac", "ransac", "affine")
WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, "inliers only")


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def hue_turned(image: Image.Image, degrees: int = 120) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + degrees * 256 // 360) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def add_lookalikes(root: Path) -> list[dict]:
    """Mirror and colour-variant lots for each queried stamp; returns the lots written."""
    queried = {row["relevant_ids"] for row in read_rows(root / "queries-1.csv") if row["kind"] == "stamp"}
    lots = read_rows(root / "catalogue" / "metadata.csv")
    added = []
    for lot in lots:
        if lot["id"] not in queried:
            continue
        main = Image.open(root / "catalogue" / lot["image"].split("|")[0]).convert("RGB")
        grey = np.asarray(main, np.float32)
        mirrored = ImageOps.mirror(main)
        variants = []
        if np.abs(grey - np.asarray(mirrored, np.float32)).mean() > 6:
            variants.append(("mirror", mirrored))
        if np.asarray(main.convert("HSV"))[..., 1].mean() > 40:
            variants.append(("colour", hue_turned(main)))
        for kind, image in variants:
            relative = f"photos/{kind}/{lot['id']}.jpg"
            (root / "catalogue" / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / "catalogue" / relative, "JPEG", quality=88)
            added.append({"id": f"{kind}/{lot['id']}", "image": relative, "title": f"{lot['title']} ({kind})",
                          "category": lot["category"]})
    with open(root / "catalogue" / "metadata-lookalikes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "image", "title", "category"])
        writer.writeheader()
        writer.writerows([{key: lot[key] for key in ("id", "image", "title", "category")} for lot in lots] + added)
    return added


def make_set(root: Path) -> None:
    if not (root / "catalogue" / "metadata-lookalikes.csv").exists():
        make_lots_set(root)
        add_lookalikes(root)


def main_photo(root: Path, lots: dict[str, str], lot_id: str) -> Path:
    return root / "catalogue" / lots[lot_id].split("|")[0]


def pair_rows(root: Path, engine: Engine) -> list[tuple[Path, Path, str]]:
    """(new-item photo, catalogue photo, 'same' or the kind of lookalike)."""
    lots = {row["id"]: row["image"] for row in read_rows(root / "catalogue" / "metadata-lookalikes.csv")}
    pairs = []
    for row in read_rows(root / "queries-3.csv"):
        lot_id = row["relevant_ids"]
        family = {lot_id, f"mirror/{lot_id}", f"colour/{lot_id}"}
        for photo in row["query_image"].split("|"):
            query = root / photo
            pairs.append((query, main_photo(root, lots, lot_id), "same"))
            for kind in ("mirror", "colour"):
                if f"{kind}/{lot_id}" in lots:
                    pairs.append((query, main_photo(root, lots, f"{kind}/{lot_id}"), kind))
            other = next((hit for hit in engine.search(query, k=5).hits if hit.id not in family), None)
            if other is not None:
                pairs.append((query, main_photo(root, lots, other.id), "nearest other lot"))
    return pairs


def threshold_for_precision(same: list[tuple[int, float]], other: list[tuple[int, float]], colour_limit: float | None,
                            precision: float = 0.99) -> tuple[int, float, float]:
    """The smallest inlier threshold whose verdict reaches ``precision``; (threshold, precision, recall)."""
    def says_same(inliers: int, colour: float, threshold: int) -> bool:
        return inliers >= threshold and (colour_limit is None or colour <= colour_limit)

    for threshold in range(4, 400):
        true = sum(says_same(inliers, colour, threshold) for inliers, colour in same)
        false = sum(says_same(inliers, colour, threshold) for inliers, colour in other)
        if true + false and true / (true + false) >= precision:
            return threshold, true / (true + false), true / len(same)
    return 400, 1.0, 0.0


def pairs_part(root: Path, pairs: list[tuple[Path, Path, str]]) -> list[dict]:
    rows = []
    photos = sorted({path for pair in pairs for path in pair[:2]})
    for kind in KINDS:
        features, extract_ms = {}, []
        for path in photos:
            image = Image.open(path).convert("RGB")
            started = time.perf_counter()
            features[path] = extract(image, kind)
            extract_ms.append((time.perf_counter() - started) * 1000)
        for method in METHODS if kind == "rootsift" else ("magsac",):
            measured, verify_ms = [], []
            for query, candidate, label in pairs:
                started = time.perf_counter()
                found = verify(features[query], features[candidate], method)
                verify_ms.append((time.perf_counter() - started) * 1000)
                measured.append((label, found.inliers, found.colour_difference if found.colour_difference is not None else 1e9))
            same = [(inliers, colour) for label, inliers, colour in measured if label == "same"]
            other = [(inliers, colour) for label, inliers, colour in measured if label != "same"]
            limits = (None, 10.0, 15.0, 20.0, 30.0) if (kind, method) == ("rootsift", "magsac") else (None, 20.0)
            for colour_limit in limits:
                threshold, precision, recall = threshold_for_precision(same, other, colour_limit)
                row = {"features": kind, "fit": method, "colour limit": colour_limit or "none",
                       "extract ms p50": round(statistics.median(extract_ms), 1),
                       "verify ms p50": round(statistics.median(verify_ms), 2),
                       "same: median inliers": statistics.median(i for i, _ in same),
                       "lookalike: median inliers": statistics.median(i for i, _ in other),
                       "threshold for precision 0.99": threshold, "precision": round(precision, 3),
                       "recall": round(recall, 3)}
                for label in ("mirror", "colour", "nearest other lot"):
                    group = [(inliers, colour) for name, inliers, colour in measured if name == label]
                    says = sum(i >= threshold and (colour_limit is None or c <= colour_limit) for i, c in group)
                    row[f"{label} called same"] = f"{says}/{len(group)}"
                rows.append(row)
                print(row, flush=True)
            if (kind, method) == (local_features.DEFAULT_KIND, "magsac"):
                rows.append(at_defaults(kind, method, measured, extract_ms, verify_ms))
    return rows


def at_defaults(kind: str, method: str, measured: list[tuple[str, int, float]], extract_ms: list[float],
                verify_ms: list[float]) -> dict:
    """The verdict as the engine gives it (verification.SAME_OBJECT_INLIERS and SAME_OBJECT_MAX_COLOUR)."""
    def says(inliers: int, colour: float) -> bool:
        return inliers >= verification.SAME_OBJECT_INLIERS and colour <= verification.SAME_OBJECT_MAX_COLOUR

    true = sum(says(i, c) for label, i, c in measured if label == "same")
    false = sum(says(i, c) for label, i, c in measured if label != "same")
    same_count = sum(label == "same" for label, _, _ in measured)
    row = {"features": kind, "fit": method, "colour limit": f"{verification.SAME_OBJECT_MAX_COLOUR} (default)",
           "extract ms p50": round(statistics.median(extract_ms), 1), "verify ms p50": round(statistics.median(verify_ms), 2),
           "threshold for precision 0.99": f"{verification.SAME_OBJECT_INLIERS} (default)",
           "precision": round(true / (true + false), 3) if true + false else "", "recall": round(true / same_count, 3)}
    for label in ("mirror", "colour", "nearest other lot"):
        group = [(i, c) for name, i, c in measured if name == label]
        row[f"{label} called same"] = f"{sum(says(i, c) for i, c in group)}/{len(group)}"
    print(row, flush=True)
    return row


QUERY_SIDES = (512, 384, 320, 256)


def query_sides_part(pairs: list[tuple[Path, Path, str]]) -> list[dict]:
    """The query photo's keypoints found at a smaller size (the catalogue photo's stay at MAX_SIDE): what it saves
    and what the same-object verdict loses, at the engine's thresholds and at the threshold for precision 0.99."""
    candidates = {path: extract(Image.open(path).convert("RGB")) for path in sorted({pair[1] for pair in pairs})}
    rows = []
    for side in QUERY_SIDES:
        queries, extract_ms = {}, []
        for path in sorted({pair[0] for pair in pairs}):
            image = Image.open(path).convert("RGB")
            started = time.perf_counter()
            queries[path] = extract(image, max_side=side)
            extract_ms.append((time.perf_counter() - started) * 1000)
        measured = []
        for query, candidate, label in pairs:
            found = verify(queries[query], candidates[candidate])
            measured.append((label, found.inliers, found.colour_difference if found.colour_difference is not None else 1e9))
        same = [(inliers, colour) for label, inliers, colour in measured if label == "same"]
        other = [(inliers, colour) for label, inliers, colour in measured if label != "same"]
        threshold, precision, recall = threshold_for_precision(same, other, verification.SAME_OBJECT_MAX_COLOUR)
        defaults = at_defaults(local_features.DEFAULT_KIND, "magsac", measured, extract_ms, [0.0])
        rows.append({"query side": side, "extract ms p50": round(statistics.median(extract_ms), 1),
                     "keypoints p50": statistics.median(len(features) for features in queries.values()),
                     "same: median inliers": statistics.median(i for i, _ in same),
                     "threshold for precision 0.99": threshold, "recall there": round(recall, 3),
                     "precision at defaults": defaults["precision"], "recall at defaults": defaults["recall"],
                     "lookalikes called same at defaults": ", ".join(
                         defaults[f"{label} called same"] for label in ("mirror", "colour", "nearest other lot"))})
        print(rows[-1], flush=True)
    return rows


def retrieval_part(root: Path, engine: Engine, photos: int) -> list[dict]:
    rows = []
    queries = read_rows(root / f"queries-{photos}.csv")
    ranked_off, verified = [], []
    elapsed = {"off": [], "on": []}
    for row in queries:
        images = [root / photo for photo in row["query_image"].split("|")]
        for mode, top in (("off", 0), ("on", 10)):
            engine.settings = engine.settings.with_(verify_top=top)
            started = time.perf_counter()
            hits = engine.search(images, k=10).hits
            elapsed[mode].append((time.perf_counter() - started) * 1000)
            if mode == "off":
                ranked_off.append([hit.id for hit in hits])
            else:
                # The lot's rank before verification (its score with its second photo's share), so that the sweep
                # below re-weighs only the inliers' say.
                verified.append([(hit.id, hit.ranking - verification.FUSION_WEIGHT * math.log1p(hit.inliers or 0),
                                  hit.inliers or 0, bool(hit.same_object)) for hit in hits])
    relevant = [row["relevant_ids"] for row in queries]

    def figures(rankings: list[list[str]]) -> dict:
        top1 = np.mean([ranking[:1] == [want] for ranking, want in zip(rankings, relevant)])
        ap = np.mean([1 / (ranking.index(want) + 1) if want in ranking else 0.0 for ranking, want in zip(rankings, relevant)])
        return {"r@1": round(float(top1), 3), "mAP@10": round(float(ap), 3)}

    rows.append({"query photos": photos, "ranking": "lot rank (verification off)", **figures(ranked_off),
                 "ms/query p50": round(statistics.median(elapsed["off"]))})
    for weight in WEIGHTS:
        if weight == "inliers only":
            def key(hit):
                return (-hit[2], -hit[1])
        else:
            def key(hit, weight=weight):
                return -(hit[1] + weight * math.log1p(hit[2]))
        reranked = [[hit[0] for hit in sorted(hits, key=key)] for hits in verified]
        label = f"verified top 10, rank + {weight} ln(1+inliers)" if weight != "inliers only" else "verified top 10, inliers only"
        rows.append({"query photos": photos, "ranking": label, **figures(reranked),
                     "ms/query p50": round(statistics.median(elapsed["on"]))})
    said_same = [(hits[0][0] == want) for hits, want in zip(verified, relevant) if hits and hits[0][3]]
    rows.append({"query photos": photos, "ranking": "top hit called same object: share correct",
                 "r@1": f"{sum(said_same)}/{len(said_same)}", "mAP@10": "", "ms/query p50": ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=RESULTS / "verify-set")
    parser.add_argument("--query-mode", default="crops")
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--query-sides", action="store_true",
                        help="only measure the query photo's keypoints at smaller sizes (query_verify_sides.json)")
    args = parser.parse_args()
    if args.query_sides:
        make_set(args.set)
        with tempfile.TemporaryDirectory() as scratch:
            engine = Engine(Path(scratch) / "catalog", query_mode=args.query_mode)
            engine.index_sources([], args.set / "catalogue" / "metadata-lookalikes.csv")
            sides = query_sides_part(pair_rows(args.set, engine))
            engine.close()
        print("\nthe query photo's keypoints at a smaller size, catalogue photos at "
              f"{local_features.MAX_SIDE} px (RootSIFT, MAGSAC++)\n")
        print_table(sides, list(sides[0]))
        write_json("verify_query_sides", {"set": str(args.set), "rows": sides})
        return
    make_set(args.set)
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(Path(scratch) / "catalog", query_mode=args.query_mode)
        engine.index_sources([], args.set / "catalogue" / "metadata-lookalikes.csv")
        pair_table = [] if args.skip_pairs else pairs_part(args.set, pair_rows(args.set, engine))
        retrieval = []
        for photos in () if args.skip_retrieval else (1, 3):
            retrieval += retrieval_part(args.set, engine, photos)
            print(retrieval[-1], flush=True)
        engine.close()
    if pair_table:
        print("\nPart 1: new-item photo vs catalogue photo, same object vs lookalike lots\n")
        print_table(pair_table, list(pair_table[0]))
    if retrieval:
        print(f"\nPart 2: retrieval on {args.set} with the lookalike lots, query mode {args.query_mode}\n")
        print_table(retrieval, list(retrieval[0]))
    write_json("verify_bench" + ("_pairs" if args.skip_retrieval else ""),
               {"set": str(args.set), "query_mode": args.query_mode, "pairs": pair_table, "retrieval": retrieval})


if __name__ == "__main__":
    main()
