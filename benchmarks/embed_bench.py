"""Indexing throughput (decode + embed, images/s): onnxruntime (float32 and
int8) against torch eager in the same run, for EfficientNet-Lite0 and Lite2,
on the demo photos; and the time to embed one query photo (single view).

    .venv/bin/python benchmarks/embed_bench.py [--images N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import demo_photo_folder, print_table, write_json
from query_bench import phone_photos

from lookalike.encoders import load_encoder
from lookalike.engine import Engine
from lookalike.images import decode_image


def onnx_pipeline(spec: str, metadata, images: int) -> float:
    """The real indexing path: Engine.index_sources into a fresh catalogue."""
    lines = metadata.read_text().splitlines()
    with tempfile.TemporaryDirectory() as scratch:
        subset = os.path.join(scratch, "subset.csv")
        with open(subset, "w") as handle:
            handle.write("\n".join(lines[: images + 1]).replace(",photos/", f",{metadata.parent}/photos/") + "\n")
        engine = Engine(os.path.join(scratch, "catalog"), model=spec)
        _ = engine.encoder  # load (and export once) outside the timing
        report = engine.index_sources([], subset)
        engine.close()
    return report.images_per_second


def query_embed_ms(spec: str, photos: list[bytes]) -> float:
    """Median time to decode and embed one 640 px phone photo as a single view."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(os.path.join(scratch, "catalog"), model=spec, query_mode="single")
        engine.embed_query(photos[0])
        times = []
        for photo in photos:
            started = time.perf_counter()
            engine.embed_query(photo)
            times.append((time.perf_counter() - started) * 1000)
        engine.close()
    return float(np.median(times))


def torch_eager(spec: str, paths, batch_size: int = 32) -> float:
    import torch

    from tests.torch_reference import load_efficientnet_lite

    torch.set_num_threads(os.cpu_count() or 1)
    encoder = load_encoder(spec)  # same preprocessing as the ONNX path
    model = load_efficientnet_lite(spec.split(":")[0])  # the float32 network, as torch runs it
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool, torch.inference_mode():
        arrays = list(pool.map(lambda path: encoder.preprocess(decode_image(path, target_size=encoder.decode_size)), paths))
        for start in range(0, len(arrays), batch_size):
            feature_map, _ = model(torch.from_numpy(np.stack(arrays[start : start + batch_size])))
            torch.nn.functional.normalize(feature_map.mean(dim=(2, 3)), dim=1)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    folder = demo_photo_folder()
    metadata = folder / "metadata.csv"
    paths = sorted((folder / "photos").rglob("*.jpg"))[: args.images]
    photos = [photo for _, photo in phone_photos(30)]
    rows = []
    for architecture in ("efficientnet-lite0:avg", "efficientnet-lite2:avg"):
        torch_rate = torch_eager(architecture, paths)
        for spec in (architecture, architecture + ":int8"):
            onnx_rate = onnx_pipeline(spec, metadata, len(paths))
            rows.append({"model": spec, "images": len(paths), "onnxruntime img/s": f"{onnx_rate:.1f}",
                         "torch eager img/s": f"{torch_rate:.1f}", "speed-up": f"{onnx_rate / torch_rate:.1f}x",
                         "query embed ms (p50)": f"{query_embed_ms(spec, photos):.1f}"})
    print(f"decode + embed, {os.cpu_count()} cores, batch 32, demo photos (~500 px JPEG)\n")
    print_table(rows, list(rows[0]))
    write_json("embed", {"rows": rows})


if __name__ == "__main__":
    main()
