"""Distributed embedding with Ray Data: read, decode and embed photos in Ray
actors (one onnxruntime session each), on this machine or on a cluster.

Only the heavy, stateless part runs in Ray. The results stream back to the
driver, which writes them to the catalogue through the same engine path as
a local run (Engine.add_vectors), so change detection, crash safety and the
index are unchanged. On a cluster the workers need lookalike installed and
the photo paths readable (a shared file system or object store mount).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

DEFAULT_BATCH = 32


class EmbedActor:
    """One encoder per actor; a batch of photo paths in, vectors (or errors) out."""

    def __init__(self, model_spec: str, threads: int = 1, cache_root: str | None = None):
        from lookalike.encoders import load_encoder

        self.encoder = load_encoder(model_spec, threads=threads, cache_root=cache_root)

    def __call__(self, batch: dict) -> dict:
        from lookalike.images import ImageDecodeError, decode_image

        arrays, good, errors = [], [], []
        for position, path in zip(batch["position"], batch["path"]):
            try:
                arrays.append(self.encoder.preprocess(decode_image(str(path), target_size=self.encoder.decode_size)))
                good.append(int(position))
            except ImageDecodeError as error:
                errors.append((int(position), str(error)))
        vectors = self.encoder.embed_arrays(np.stack(arrays)) if arrays else np.zeros((0, self.encoder.dim), np.float32)
        positions = good + [position for position, _ in errors]
        return {
            "position": np.asarray(positions, np.int64),
            "vector": list(vectors) + [np.zeros(self.encoder.dim, np.float32)] * len(errors),
            "error": [""] * len(good) + [message for _, message in errors],
        }


def embed_with_ray(paths: list[str], model_spec: str, address: str | None = None, actors: int | None = None,
                   batch_size: int = DEFAULT_BATCH, cache_root: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Yield (positions into ``paths``, vectors, error messages) as Ray finishes batches.

    ``address``: None or "local" starts Ray on this machine; "auto" or "ray://host:10001" joins a cluster.
    """
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise RuntimeError("--ray needs Ray Data: pip install -e '.[ray]'") from error
    started_here = not ray.is_initialized()
    if started_here:
        if address in (None, "", "local"):
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = actors or max(1, cpus)
        items = [{"position": position, "path": path} for position, path in enumerate(paths)]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size, 4 * count))).map_batches(
            EmbedActor, fn_constructor_kwargs={"model_spec": model_spec, "threads": max(1, cpus // count),
                                               "cache_root": cache_root},
            batch_size=batch_size, concurrency=count, num_cpus=max(1, cpus // count),
            batch_format="numpy")
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield (np.asarray(batch["position"], np.int64), np.stack(batch["vector"]).astype(np.float32),
                   [str(message) for message in batch["error"]])
    finally:
        if started_here:
            ray.shutdown()
