"""Which query views are worth their cost: candidate view plans side by side in one run, on the query_bench set
(phone photos of demo items against the demo catalogue) and on the same-item set, scored the engine's way
(each lot by its best view), with the CPU time each plan's embedding takes per query.

    .venv/bin/python benchmarks/view_plans_bench.py [--queries 100]
    .venv/bin/python benchmarks/view_plans_bench.py --engine single,whole+3x3@1/2,crops-light,crops

A plan is a list of stages; each stage's crops are embedded at once; a "zoom" stage crops inside the view
that matched best so far (coarse to fine). Passes are 224 px network passes (a 128 px pass counts 0.33).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from common import demo_photo_folder, print_table, write_json
from PIL import Image
from query_bench import phone_photos

from lookalike.encoders import load_encoder
from lookalike.encoders.views import QUERY_MODES
from lookalike.engine import Engine
from lookalike.images import decode_image


def grid(box: tuple[float, float, float, float], scale: float, count: int) -> list[tuple[float, float, float, float]]:
    """``count`` x ``count`` crops of ``scale`` times the box, spread evenly over it (fractions of the photo)."""
    left, top, right, bottom = box
    width, height = (right - left) * scale, (bottom - top) * scale
    xs = np.linspace(left, right - width, count) if count > 1 else [left + (right - left - width) / 2]
    ys = np.linspace(top, bottom - height, count) if count > 1 else [top + (bottom - top - height) / 2]
    return [(x, y, x + width, y + height) for y in ys for x in xs]


WHOLE = (0.0, 0.0, 1.0, 1.0)
PLANS = {
    "single": [("fixed", [WHOLE])],
    "crops (33, today's default)": [("fixed", [WHOLE, *grid(WHOLE, 0.75, 4), *grid(WHOLE, 0.5, 4)])],
    "crops-light (19)": [("fixed", [WHOLE, *grid(WHOLE, 0.75, 3), *grid(WHOLE, 0.5, 3)])],
    "whole + 3x3 at 1/2 (10)": [("fixed", [WHOLE, *grid(WHOLE, 0.5, 3)])],
    "whole + 2x2 at 3/4 + 3x3 at 1/2 (14)": [("fixed", [WHOLE, *grid(WHOLE, 0.75, 2), *grid(WHOLE, 0.5, 3)])],
    "zoom: whole + 2x2 at 3/4, then 2x2 at 2/3 of the best (9)": [
        ("fixed", [WHOLE, *grid(WHOLE, 0.75, 2)]), ("zoom", (2 / 3, 2))],
    "zoom: whole + 3x3 at 1/2, then 2x2 at 3/4 of the best (14)": [
        ("fixed", [WHOLE, *grid(WHOLE, 0.5, 3)]), ("zoom", (0.75, 2))],
    "zoom: whole + 2x2 at 1/2 + centre 1/2, then 2x2 at 3/4 of the best (10)": [
        ("fixed", [WHOLE, *grid(WHOLE, 0.5, 2), *grid(WHOLE, 0.5, 1)]), ("zoom", (0.75, 2))],
    "whole, then 32 crops at 160 px (33)": [("fixed", [WHOLE]), ("fixed", [*grid(WHOLE, 0.75, 4), *grid(WHOLE, 0.5, 4)], 160)],
    "whole, then 32 crops at 128 px (33)": [("fixed", [WHOLE]), ("fixed", [*grid(WHOLE, 0.75, 4), *grid(WHOLE, 0.5, 4)], 128)],
    "whole, then 3x3 at 1/2 at 128 px (10)": [("fixed", [WHOLE]), ("fixed", grid(WHOLE, 0.5, 3), 128)],
}
ENCODERS: dict[int, object] = {}
#: Candidate modes measured through the engine besides its own (the engine's views: (scale, grid) per stage).
CANDIDATE_MODES = {"whole+3x3@1/2": ((0.5, 3),)}


def encoder_at(size: int):
    if size not in ENCODERS:
        ENCODERS[size] = load_encoder(f"efficientnet-lite0:avg:{size}:int8")
    return ENCODERS[size]


def crop(image: Image.Image, box) -> Image.Image:
    width, height = image.size
    left, top, right, bottom = box
    return image.crop((round(left * width), round(top * height), max(round(right * width), round(left * width) + 1),
                       max(round(bottom * height), round(top * height) + 1)))


def run_plan(plan, image: Image.Image, encoder, catalogue: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Each lot's best score over the plan's views, the number of views, and the CPU seconds embedding took."""
    boxes, vectors, cpu = [], [], 0.0
    for kind, spec, *size in plan:
        stage_encoder = encoder_at(size[0]) if size else encoder
        if kind == "fixed":
            new = list(spec)
        else:
            scale, count = spec
            best = int(np.argmax((np.concatenate(vectors) @ catalogue.T).max(axis=1)))
            new = grid(boxes[best], scale, count)
        started = time.process_time()
        vectors.append(stage_encoder.embed_arrays(np.stack([stage_encoder.preprocess(crop(image, box)) for box in new])))
        cpu += time.process_time() - started
        boxes += new
    views = np.concatenate(vectors)
    return (views @ catalogue.T).max(axis=0), len(views), cpu


def through_the_engine(photos: list[tuple[str, bytes]], modes: list[str], query_sides: list[int]) -> list[dict]:
    """Each mode through the real Engine.search (verification of the 10 best lots on, as by default), with the query
    photo's keypoints found at each size: the whole search's CPU time per query (every thread), and rank-1, top-5
    and mAP@10 (one relevant lot: 1/rank)."""
    from lookalike.engine import verification

    rows = []
    runs = [(mode, side) for side in query_sides for mode in modes]
    QUERY_MODES.update(CANDIDATE_MODES)
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(scratch, model="efficientnet-lite0:avg:int8")
        engine.index_sources([], demo_photo_folder() / "metadata.csv")
        for mode in modes:  # untimed: the verifier's cache of catalogue photo features is warm for every mode
            engine.query_mode = mode
            for _, photo in photos:
                engine.search(photo, k=10)
        for mode, side in runs:
            engine.query_mode, verification.QUERY_MAX_SIDE = mode, side
            engine.search(photos[0][1], k=10)  # warm up
            ranks, cpu_ms, wall_ms = [], [], []
            for item_id, photo in photos:
                started, wall = time.process_time(), time.perf_counter()
                ids = [hit.id for hit in engine.search(photo, k=10).hits]
                cpu_ms.append((time.process_time() - started) * 1000)
                wall_ms.append((time.perf_counter() - wall) * 1000)
                ranks.append(ids.index(item_id) + 1 if item_id in ids else 99)
            ranks = np.asarray(ranks)
            rows.append({"mode": mode, "query SIFT px": side, "CPU ms p50": f"{np.percentile(cpu_ms, 50):.0f}",
                         "CPU ms p99": f"{np.percentile(cpu_ms, 99):.0f}", "wall ms p50": f"{np.percentile(wall_ms, 50):.0f}",
                         "rank-1": f"{np.mean(ranks == 1):.2f}", "top-5": f"{np.mean(ranks <= 5):.2f}",
                         "mAP@10": f"{np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)):.3f}"})
            print(rows[-1], flush=True)
        engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--only", default="", help="run only the plans whose name contains this")
    parser.add_argument("--engine", default="", help="comma-separated query modes to run through Engine.search instead "
                        f"(the engine's, or {', '.join(CANDIDATE_MODES)})")
    parser.add_argument("--query-sides", default="", help="with --engine: comma-separated sizes at which the query "
                        "photo's keypoints are found for verification (default: the engine's)")
    args = parser.parse_args()
    if args.engine:
        from lookalike.engine import verification

        sides = [int(side) for side in args.query_sides.split(",")] if args.query_sides else [verification.QUERY_MAX_SIDE]
        rows = through_the_engine(phone_photos(args.queries), args.engine.split(","), sides)
        print()
        print_table(rows, list(rows[0]))
        write_json("view_plans_engine", {"rows": rows, "queries": args.queries})
        return
    encoder = ENCODERS[224] = load_encoder("efficientnet-lite0:avg:int8")
    for size in (160, 128):
        encoder_at(size)  # exported and quantised before anything is timed
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(scratch, encoder=encoder)
        engine.index_sources([], demo_photo_folder() / "metadata.csv")
        keys, vectors = zip(*engine.catalog.vectors(engine.model_id))
        keys, catalogue = np.concatenate(keys), np.concatenate(vectors)
        owners = engine.catalog.photo_owners(keys.tolist())
        items = engine.catalog.get_many({owner[0] for owner in owners.values()})
        ids = np.asarray([items[owners[key][0]].id for key in keys.tolist()])
        engine.close()
    photos = [(item_id, decode_image(photo, target_size=2 * encoder.decode_size)) for item_id, photo in phone_photos(args.queries)]
    rows = []
    for name, plan in PLANS.items():
        if args.only not in name:
            continue
        ranks, cpu_ms, views = [], [], 0
        for item_id, image in photos:
            scores, views, cpu = run_plan(plan, image, encoder, catalogue)
            order = ids[np.argsort(-scores)]
            ranks.append(int(np.flatnonzero(order == item_id)[0]) + 1)
            cpu_ms.append(cpu * 1000)
        ranks = np.asarray(ranks)
        rows.append({"plan": name, "views": views, "CPU ms p50": f"{np.percentile(cpu_ms, 50):.0f}",
                     "CPU ms p99": f"{np.percentile(cpu_ms, 99):.0f}", "rank-1": f"{np.mean(ranks == 1):.2f}",
                     "top-5": f"{np.mean(ranks <= 5):.2f}", "top-10": f"{np.mean(ranks <= 10):.2f}"})
        print(rows[-1], flush=True)
    print()
    print_table(rows, list(rows[0]))
    write_json("view_plans" + ("_some" if args.only else ""), {"rows": rows, "queries": args.queries})


if __name__ == "__main__":
    main()
