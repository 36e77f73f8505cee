"""Serve image models with onnxruntime; torch is used once, to export.

The exported graph takes preprocessed pixels and returns the pooled,
L2-normalised embedding plus the ImageNet logits (which prove, in the tests,
that the real weights are loaded). Exports are cached on disk, keyed by the
model name, pooling and a hash of the weights file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encoders.base import l2_normalise

PREPROCESS_VERSION = 1
GRAPH_VERSION = 2
POOLINGS = ("avg", "gem")
GEM_POWER = 3.0


def cache_dir() -> Path:
    root = os.environ.get("LOOKALIKE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lookalike"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _export_efficientnet_lite(variant_name: str, pooling: str, target: Path) -> None:
    import torch

    from lookalike.encoders.efficientnet_lite import VARIANTS, load_efficientnet_lite

    variant = VARIANTS[variant_name]
    backbone = load_efficientnet_lite(variant)

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            feature_map, logits = self.backbone(pixels)
            if pooling == "gem":
                pooled = feature_map.clamp(min=1e-6).pow(GEM_POWER).mean(dim=(2, 3)).pow(1.0 / GEM_POWER)
            else:
                pooled = feature_map.mean(dim=(2, 3))
            embedding = torch.nn.functional.normalize(pooled, dim=1)
            return embedding, logits, feature_map

    dummy = torch.zeros(2, 3, variant.image_size, variant.image_size)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch_file = Path(scratch) / "model.onnx"
        torch.onnx.export(
            Exported().eval(),
            (dummy,),
            str(scratch_file),
            input_names=["pixels"],
            output_names=["embedding", "logits", "feature_map"],
            # Any side that is a multiple of 32 gets the same TF "same" padding, so H and W may vary.
            dynamic_axes={"pixels": {0: "batch", 2: "height", 3: "width"}, "embedding": {0: "batch"},
                          "logits": {0: "batch"}, "feature_map": {0: "batch", 2: "rows", 3: "columns"}},
            opset_version=17,
            dynamo=False,
        )
        os.replace(scratch_file, target)


class OnnxEfficientNetLite:
    """EfficientNet-Lite (ImageNet) served by onnxruntime."""

    def __init__(self, name: str = "efficientnet-lite0", pooling: str = "avg", threads: int | None = None):
        from lookalike.encoders.efficientnet_lite import VARIANTS, weights_path

        if name not in VARIANTS:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(VARIANTS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        variant = VARIANTS[name]
        self.name = name
        self.pooling = pooling
        self.image_size = variant.image_size
        self.resize_size = int(round(variant.image_size / variant.crop_fraction))
        self.decode_size = self.resize_size
        self.dim = 1280
        self.model_id = f"{name}:{pooling}:{variant.image_size}:p{PREPROCESS_VERSION}"
        digest = _file_digest(weights_path(variant))
        self.onnx_path = cache_dir() / f"{name}-{pooling}-{digest}-g{GRAPH_VERSION}.onnx"
        if not self.onnx_path.exists():
            _export_efficientnet_lite(name, pooling, self.onnx_path)
        self._session = _make_session(self.onnx_path, threads)
        self._lock = threading.Lock()

    def preprocess(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        scale = self.resize_size / min(width, height)
        resized = image.resize(
            (max(self.image_size, round(width * scale)), max(self.image_size, round(height * scale))),
            Image.Resampling.BICUBIC,
        )
        left = (resized.width - self.image_size) // 2
        top = (resized.height - self.image_size) // 2
        cropped = resized.crop((left, top, left + self.image_size, top + self.image_size))
        array = np.asarray(cropped, dtype=np.float32)
        return np.ascontiguousarray((array / 127.5 - 1.0).transpose(2, 0, 1))

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, logits) for a preprocessed batch."""
        embedding, logits = self._session.run(["embedding", "logits"], {"pixels": np.asarray(batch, np.float32)})
        return l2_normalise(embedding), logits

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]


def _make_session(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
