"""Retrieval quality and cost of each candidate step, side by side in one run,
on the same-item set of make_same_item_set.py (made under
benchmarks/results/same-item/ if missing) and its Fashion-MNIST class set.

    .venv/bin/python benchmarks/quality_bench.py [--fashion 5000] [--models efficientnet-lite0:avg,...]

Every model embeds the catalogue and every view of every query once; the
steps (query views, flip, scoring, re-ranking, concatenation) are then scored
on those vectors with exact search, through lookalike's own metric code. The
shipped default is checked end to end with `lookalike evaluate` (README).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, print_table, write_json
from PIL import Image, ImageOps

from lookalike.encoders import load_encoder
from lookalike.engine.evaluation import QueryOutcome, summarise
from lookalike.images import decode_image

MODELS = ("efficientnet-lite0:avg", "efficientnet-lite0:avg:int8", "efficientnet-lite0:gem", "efficientnet-lite0:avg:288",
          "efficientnet-lite2:avg", "efficientnet-lite2:avg:224", "mobilenetv2:avg")
GRIDS = {"3x3": ((0.75, 3), (0.5, 3)), "4x4": ((0.75, 4), (0.5, 4))}


def grid_views(image: Image.Image, grid: tuple) -> list[Image.Image]:
    views = []
    width, height = image.size
    for scale, count in grid:
        crop_width, crop_height = max(1, int(width * scale)), max(1, int(height * scale))
        for y in np.linspace(0, height - crop_height, count).round().astype(int):
            for x in np.linspace(0, width - crop_width, count).round().astype(int):
                views.append(image.crop((x, y, x + crop_width, y + crop_height)))
    return views


def read_set(folder: Path) -> tuple[list[dict], list[dict]]:
    with open(folder / "catalogue" / "metadata.csv", encoding="utf-8") as handle:
        items = list(csv.DictReader(handle))
    with open(folder / "queries.csv", encoding="utf-8") as handle:
        queries = list(csv.DictReader(handle))
    return items, queries


def embed(encoder, images: list[Image.Image], batch_size: int = 32) -> tuple[np.ndarray, float]:
    """Vectors and the model's own throughput (img/s, preprocessing included)."""
    started = time.perf_counter()
    parts = [encoder.embed_arrays(np.stack([encoder.preprocess(image) for image in images[i : i + batch_size]]))
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts), len(images) / (time.perf_counter() - started)


def embed_model(spec: str, folder: Path, fashion: Path | None, extended: bool) -> dict:
    encoder = load_encoder(spec)
    items, queries = read_set(folder)
    catalogue_images = [decode_image(folder / "catalogue" / item["image"], target_size=encoder.decode_size) for item in items]
    catalogue, images_per_second = embed(encoder, catalogue_images)
    layouts = {"whole": 1, "flip": 1, "3x3": 18, **({"4x4": 32} if extended else {})}
    per_query = []
    for query in queries:
        image = decode_image(folder / query["query_image"], target_size=2 * encoder.decode_size)
        views = [image, ImageOps.mirror(image), *grid_views(image, GRIDS["3x3"])]
        if extended:
            views += grid_views(image, GRIDS["4x4"])
        per_query.append(views)
    flat, _ = embed(encoder, [view for views in per_query for view in views])
    view_vectors = flat.reshape(len(queries), -1, encoder.dim)
    result = {"spec": spec, "ids": [item["id"] for item in items], "catalogue": catalogue, "views": view_vectors,
              "layout": layouts, "queries": queries, "img_per_s": images_per_second,
              "ms_per_view": 1000 / images_per_second}
    if fashion:
        fashion_items, fashion_queries = read_set(fashion)
        fashion_catalogue, _ = embed(encoder, [decode_image(fashion / "catalogue" / item["image"]) for item in fashion_items])
        fashion_views, _ = embed(encoder, [decode_image(fashion / query["query_image"]) for query in fashion_queries])
        result["fashion"] = ([item["id"] for item in fashion_items], fashion_catalogue, fashion_views, fashion_queries)
    return result


def select(model: dict, views: tuple[str, ...]) -> np.ndarray:
    """The chosen view layouts' vectors, (queries, views, dim)."""
    starts, offset = {}, 0
    for name, count in model["layout"].items():
        starts[name] = (offset, offset + count)
        offset += count
    return np.concatenate([model["views"][:, slice(*starts[name])] for name in views], axis=1)


def item_scores(view_vectors: np.ndarray, catalogue: np.ndarray, aggregate: str = "max") -> np.ndarray:
    """(queries, items): each item scored by its best view, or the mean of its best two."""
    similarities = np.einsum("qvd,nd->qvn", view_vectors, catalogue)
    if aggregate == "top2" and similarities.shape[1] > 1:
        top = np.sort(similarities, axis=1)[:, -2:]
        return top.mean(axis=1)
    return similarities.max(axis=1)


def query_expansion(scores: np.ndarray, catalogue: np.ndarray, neighbours: int = 2, alpha: float = 3.0) -> np.ndarray:
    """alpha-QE on item scores: add the top items' own similarity to every item, weighted by score^alpha."""
    top = np.argsort(-scores, axis=1)[:, :neighbours]
    weights = np.take_along_axis(scores, top, axis=1).clip(0) ** alpha
    expanded = np.einsum("qm,qmn->qn", weights, catalogue[top] @ catalogue.T)
    return scores + expanded / (1 + weights.sum(axis=1, keepdims=True))


def database_augmentation(catalogue: np.ndarray, neighbours: int = 2) -> np.ndarray:
    similarities = catalogue @ catalogue.T
    top = np.argsort(-similarities, axis=1)[:, : neighbours + 1]  # itself first
    weights = np.take_along_axis(similarities, top, axis=1).clip(0) ** 3
    augmented = np.einsum("nm,nmd->nd", weights, catalogue[top])
    return augmented / np.linalg.norm(augmented, axis=1, keepdims=True)


def score(ids: list[str], queries: list[dict], scores: np.ndarray, k: int = 10) -> dict:
    ranked = np.argsort(-scores, axis=1)[:, :k]
    outcomes = [QueryOutcome(query["query_image"], query["relevant_ids"].split("|"), [ids[i] for i in row])
                for query, row in zip(queries, ranked)]
    overall = summarise(outcomes, k)
    row = {"r@1": f"{overall.recall[1]:.3f}", "r@5": f"{overall.recall[5]:.3f}", "mAP@10": f"{overall.map_at_k:.3f}"}
    for kind in ("stamp", "photo", "pair"):
        chosen = [o for o, q in zip(outcomes, queries) if q.get("kind") == kind]
        if chosen:
            row[f"{kind} r@1"] = f"{summarise(chosen, k).recall[1]:.2f}"
    return row


def fashion_row(model: dict, catalogue_transform=None) -> dict:
    if "fashion" not in model:
        return {}
    ids, catalogue, views, queries = model["fashion"]
    catalogue = catalogue_transform(catalogue) if catalogue_transform else catalogue
    outcomes = [QueryOutcome(q["query_image"], q["relevant_ids"].split("|"), [ids[i] for i in row])
                for q, row in zip(queries, np.argsort(-(views @ catalogue.T), axis=1)[:, :10])]
    result = summarise(outcomes, 10)
    return {"fashion P@1": f"{result.recall[1]:.3f}", "fashion P@10": f"{result.precision_at_k:.3f}"}


def concatenate(first: dict, second: dict) -> dict:
    """Both models' vectors side by side (each unit length, so the result is too after / sqrt 2)."""
    layout = {name: count for name, count in first["layout"].items() if second["layout"].get(name) == count}
    result = dict(first)
    result.update(spec=f"{first['spec']} + {second['spec']}", layout=layout,
                  catalogue=np.concatenate([first["catalogue"], second["catalogue"]], axis=1) / np.sqrt(2),
                  views=np.concatenate([select(first, tuple(layout)), select(second, tuple(layout))], axis=2) / np.sqrt(2),
                  img_per_s=1 / (1 / first["img_per_s"] + 1 / second["img_per_s"]))
    result["ms_per_view"] = 1000 / result["img_per_s"]
    return result


def steps(models: dict[str, dict]) -> list[dict]:
    rows = []

    def add(step: str, model: dict, views: tuple[str, ...], aggregate="max", rerank=None, catalogue=None, fashion=None):
        catalogue = model["catalogue"] if catalogue is None else catalogue
        scores = item_scores(select(model, views), catalogue, aggregate)
        if rerank:
            scores = rerank(scores, catalogue)
        view_count = sum(model["layout"][name] for name in views)
        rows.append({"step": step, "model": model["spec"], "views": view_count,
                     **score(model["ids"], model["queries"], scores), **(fashion or {}),
                     "img/s": f"{model['img_per_s']:.0f}", "query embed ms": f"{view_count * model['ms_per_view']:.0f}"})

    lite0 = models.get("efficientnet-lite0:avg")
    for model in models.values():
        add("whole photo", model, ("whole",), fashion=fashion_row(model))
        add("whole + 3x3 crops at 3/4 and 1/2, best view", model, ("whole", "3x3"))
        if "4x4" in model["layout"]:
            add("whole + 4x4 crops at 3/4 and 1/2, best view", model, ("whole", "4x4"))
    mobilenets = [model for spec, model in models.items() if spec.startswith("mobilenetv2")]
    for spec in ("efficientnet-lite0:avg", "efficientnet-lite0:avg:int8"):
        for mobilenet in mobilenets if spec in models else ():
            concatenated = concatenate(models[spec], mobilenet)
            add("concatenated with mobilenetv2, whole photo", concatenated, ("whole",))
            add("concatenated with mobilenetv2, 3x3 crops", concatenated, ("whole", "3x3"))
            if "4x4" in concatenated["layout"]:
                add("concatenated with mobilenetv2, 4x4 crops", concatenated, ("whole", "4x4"))
    if lite0 is None:
        return rows
    add("+ flipped whole photo", lite0, ("whole", "flip", "3x3"))
    add("4x4 crops, item scored by its best two views", lite0, ("whole", "4x4"), aggregate="top2")
    add("3x3 crops, best two views", lite0, ("whole", "3x3"), aggregate="top2")
    add("3x3 crops + alpha query expansion (2 items)", lite0, ("whole", "3x3"), rerank=query_expansion)
    augmented = database_augmentation(lite0["catalogue"])
    add("3x3 crops + database-side augmentation (2 items)", lite0, ("whole", "3x3"), catalogue=augmented,
        fashion=fashion_row(lite0, database_augmentation))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=RESULTS / "same-item")
    parser.add_argument("--fashion", type=int, default=5000, help="Fashion-MNIST catalogue size (0: skip)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--grid4-for", default="efficientnet-lite0:avg",
                        help="models whose queries are also cut into 4x4 crops (comma-separated, or 'all')")
    args = parser.parse_args()
    if not (args.set / "queries.csv").exists() or (args.fashion and not (args.set / "fashion" / "queries.csv").exists()):
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_same_item_set.py"), str(args.set),
                        "--fashion", str(args.fashion)], check=True)
    fashion = args.set / "fashion" if args.fashion else None
    models = {}
    for spec in args.models.split(","):
        print(f"embedding with {spec} ...", file=sys.stderr)
        models[spec] = embed_model(spec, args.set, fashion, extended=args.grid4_for == "all" or spec in args.grid4_for.split(","))
    rows = steps(models)
    _, queries = read_set(args.set)
    print(f"\n{len(queries)} same-item queries, {len(models[next(iter(models))]['ids'])} catalogue items; "
          f"Fashion-MNIST: {args.fashion} items, 200 queries; {os.cpu_count()} cores, exact search\n")
    columns = ["step", "model", "views", "r@1", "r@5", "mAP@10", "stamp r@1", "photo r@1", "pair r@1",
               "fashion P@1", "fashion P@10", "img/s", "query embed ms"]
    print_table(rows, columns)
    write_json("quality", {"rows": rows})


if __name__ == "__main__":
    main()
