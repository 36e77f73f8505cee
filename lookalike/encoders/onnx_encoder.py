"""Serve image models with onnxruntime. The graph is built from the packaged
weights without torch (cnn_graph.py), once, and cached.

The graph takes preprocessed pixels and returns the pooled,
L2-normalised embedding (plus the ImageNet logits where the model has a
classifier: they prove, in the tests, that the real weights are loaded).
Exports are cached on disk, keyed by the model, pooling, size, precision and a
hash of the weights file. ``int8`` models are quantised once, statically
(per-channel weights, activations calibrated on scikit-image's bundled photos;
the built-in models ship that calibration, so quantising them needs no photos).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.config import model_cache_dir
from lookalike.encoders.base import l2_normalise

PREPROCESS_VERSION = 1
GRAPH_VERSION = 4
POOLINGS = ("avg", "gem")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The models folder under ``root`` (Settings.cache_dir), by default the environment's."""
    path = Path(root or model_cache_dir()) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Backbone:
    """A pretrained CNN whose weights a package ships.

    ``build(image_size, pooling)`` returns the ONNX model mapping pixels to
    (embedding[, logits]).
    """

    name: str
    image_size: int
    crop_fraction: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: Callable[[], Path]
    build: Callable[[int, str], object]


def _lite_weights(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        from lookalike.encoders.efficientnet_lite import VARIANTS, weights_path

        return weights_path(VARIANTS[name])
    return locate


def _lite_build(name: str) -> Callable[[int, str], object]:
    def build(image_size: int, pooling: str):
        from lookalike.encoders.efficientnet_lite import VARIANTS, efficientnet_lite_graph

        return efficientnet_lite_graph(VARIANTS[name], image_size, pooling)
    return build


def _mobilenet_weights() -> Path:
    from lookalike.encoders.mobilenet_v2 import weights_path

    return weights_path()


def _mobilenet_build(image_size: int, pooling: str):
    from lookalike.encoders.mobilenet_v2 import mobilenet_v2_graph

    return mobilenet_v2_graph(image_size, pooling)


BACKBONES = {
    # TF-trained EfficientNet-Lite takes pixels scaled to [-1, 1].
    "efficientnet-lite0": Backbone("efficientnet-lite0", 224, 0.875, (0.5,) * 3, (0.5,) * 3,
                                   _lite_weights("efficientnet-lite0"), _lite_build("efficientnet-lite0")),
    "efficientnet-lite2": Backbone("efficientnet-lite2", 260, 0.89, (0.5,) * 3, (0.5,) * 3,
                                   _lite_weights("efficientnet-lite2"), _lite_build("efficientnet-lite2")),
    "mobilenetv2": Backbone("mobilenetv2", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD, _mobilenet_weights, _mobilenet_build),
}


@dataclass(frozen=True)
class ImageModelSpec:
    """``name[:pooling][:SIZE][:int8]``, e.g. ``efficientnet-lite2:avg:224`` or ``efficientnet-lite0:avg:int8``."""

    name: str
    pooling: str = "avg"
    image_size: int | None = None
    int8: bool = False

    @classmethod
    def parse(cls, spec: str) -> ImageModelSpec:
        name, *options = spec.split(":")
        if name not in BACKBONES:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(BACKBONES)} (or see `--model` in the README)")
        pooling, size, int8 = "avg", None, False
        for option in options:
            if option in POOLINGS:
                pooling = option
            elif option == "int8":
                int8 = True
            elif option.isdigit() and int(option) % 32 == 0 and 64 <= int(option) <= 640:
                size = int(option)
            else:
                raise ValueError(f"unknown model option {option!r} in {spec!r}: use a pooling ({', '.join(POOLINGS)}), "
                                 "an input size that is a multiple of 32, or int8")
        return cls(name, pooling, size, int8)


def _export(backbone: Backbone, pooling: str, image_size: int, target: Path) -> None:
    import onnx

    model = backbone.build(image_size, pooling)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        onnx.save(model, str(scratch_file))
        os.replace(scratch_file, target)


def calibration_batches(preprocess: Callable[[Image.Image], np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Model inputs for int8 calibration: scikit-image's bundled photos, whole and as four crops each."""
    import skimage.data

    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse", "immunohistochemistry",
             "brick", "grass", "gravel", "hubble_deep_field", "retina", "clock", "moon", "page")
    arrays = []
    for name in names:
        pixels = np.asarray(getattr(skimage.data, name)())
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        image = Image.fromarray(pixels[..., :3].astype(np.uint8))
        width, height = image.size
        crops = [(0, 0, width, height)] + [(x, y, x + width // 2, y + height // 2)
                                           for x in (0, width // 2) for y in (0, height // 2)]
        arrays += [preprocess(image.crop(box)) for box in crops]
    return [np.stack(arrays[start : start + batch_size]) for start in range(0, len(arrays), batch_size)]


def shipped_calibration(stem: str) -> Path:
    """Where the package keeps the int8 calibration of a built-in model (its activation ranges over the calibration
    photos, as onnxruntime's calibration cache), so a plain install quantises without the photos."""
    return Path(__file__).parent / "calibration" / f"{stem}.json"


def _quantise(source: Path, target: Path, preprocess: Callable[[Image.Image], np.ndarray],
              calibration: Path | None = None, save_calibration: Path | None = None) -> None:
    """Quantise statically, calibrated on the photos of ``calibration_batches`` or, where ``calibration`` (a cache
    onnxruntime wrote) exists, on the ranges it holds. ``save_calibration`` keeps the ranges a calibration found."""
    import logging
    import shutil

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    use_shipped = calibration is not None and calibration.is_file()
    if not use_shipped:
        try:
            batches = iter(calibration_batches(preprocess))
        except ImportError:
            raise ValueError("this int8 model has no shipped calibration: calibrating it needs scikit-image's photos "
                             "(pip install 'lookalike[calibrate]'), or use the float model (leave out :int8)") from None

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            batch = next(batches, None)
            return None if batch is None else {"pixels": batch}

    root_logger, level = logging.getLogger(), logging.getLogger().level
    root_logger.setLevel(max(level, logging.ERROR))  # the quantiser prints advice at WARNING on the root logger
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        prepared, scratch_file = Path(scratch) / "prepared.onnx", Path(scratch) / "model.onnx"
        cache = Path(scratch) / "calibration.json"
        if use_shipped:
            shutil.copyfile(calibration, cache)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(scratch_file), None if use_shipped else Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache))
        if save_calibration is not None and cache.is_file():
            shutil.copyfile(cache, save_calibration)
        os.replace(scratch_file, target)
    root_logger.setLevel(level)


class OnnxImageEncoder:
    """A pretrained CNN (see BACKBONES) served by onnxruntime."""

    def __init__(self, spec: str | ImageModelSpec = "efficientnet-lite0:avg", threads: int | None = None,
                 cache_root: str | os.PathLike | None = None):
        spec = ImageModelSpec.parse(spec) if isinstance(spec, str) else spec
        backbone = BACKBONES[spec.name]
        self.name = spec.name
        self.pooling = spec.pooling
        self.image_size = spec.image_size or backbone.image_size
        self.resize_size = int(round(self.image_size / backbone.crop_fraction))
        self.decode_size = self.resize_size
        self.dim = 1280
        self.model_id = f"{spec.name}:{spec.pooling}:{self.image_size}:p{PREPROCESS_VERSION}" + (":int8" if spec.int8 else "")
        self._scale = (1.0 / (255.0 * np.asarray(backbone.std, np.float32))).reshape(1, 1, 3)
        self._offset = (-np.asarray(backbone.mean, np.float32) / np.asarray(backbone.std, np.float32)).reshape(1, 1, 3)
        digest = _file_digest(backbone.weights())
        stem = f"{spec.name}-{spec.pooling}-{self.image_size}-{digest}-g{GRAPH_VERSION}"
        self.stem = stem
        float_path = cache_dir(cache_root) / f"{stem}.onnx"
        if not float_path.exists():
            _export(backbone, spec.pooling, self.image_size, float_path)
        self.onnx_path = float_path
        if spec.int8:
            self.onnx_path = cache_dir(cache_root) / f"{stem}-int8.onnx"
            if not self.onnx_path.exists():
                _quantise(float_path, self.onnx_path, self.preprocess, shipped_calibration(stem))
        self._session = _make_session(self.onnx_path, threads)
        self._outputs = [output.name for output in self._session.get_outputs()]
        self._lock = threading.Lock()

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return resize_centre_crop(image, self.resize_size, self.image_size, self._scale, self._offset)

    def preprocess_views(self, image: Image.Image, boxes) -> np.ndarray | None:
        """The model inputs of many crops of one image at once (query views), or None to crop them one by one."""
        return resize_centre_crop_views(image, boxes, self.resize_size, self.image_size, self._scale, self._offset)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(embeddings, ImageNet logits or None) for a preprocessed batch."""
        # One run at a time: the session already uses every core, and concurrent runs (32 HTTP clients) each
        # grow onnxruntime's memory arena, which measured 10 GB under the load test.
        with self._lock:
            results = self._session.run(self._outputs, {"pixels": np.asarray(batch, np.float32)})
        return l2_normalise(results[0]), (results[1] if len(results) > 1 else None)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]


def resize_centre_crop(image: Image.Image, resize_size: int, crop_size: int, scale: np.ndarray,
                       offset: np.ndarray) -> np.ndarray:
    """Resize the short side to ``resize_size`` (bicubic), centre-crop a square, scale to (C, H, W) float32."""
    width, height = image.size
    factor = resize_size / min(width, height)
    if max(width, height) * factor > 4 * resize_size:
        # Only the centre square survives the crop: cut it out first, or a 1x10000 strip would be resized
        # to 256x2,560,000 pixels on the way.
        keep = min(width, height) * crop_size / resize_size + 4
        left, top = max(0, round((width - keep) / 2)), max(0, round((height - keep) / 2))
        image = image.crop((left, top, min(width, left + round(keep)), min(height, top + round(keep))))
        width, height = image.size
        factor = resize_size / min(width, height)
    resized = image.resize((max(crop_size, round(width * factor)), max(crop_size, round(height * factor))),
                           Image.Resampling.BICUBIC)
    left = (resized.width - crop_size) // 2
    top = (resized.height - crop_size) // 2
    cropped = resized.crop((left, top, left + crop_size, top + crop_size))
    array = np.asarray(cropped, dtype=np.float32) * scale + offset
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def resize_centre_crop_views(image: Image.Image, boxes, resize_size: int, crop_size: int, scale: np.ndarray,
                             offset: np.ndarray) -> np.ndarray | None:
    """``resize_centre_crop`` of each crop box of ``image``, stacked, with one bicubic resize per crop size
    instead of one per crop: crops of a size share a resized copy of the image and are slices of it. (At a
    crop's border the resize sees the neighbouring pixels instead of repeating the edge.) None when a box is
    too elongated for this (the caller crops it alone)."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    out = np.empty((len(boxes), 3, crop_size, crop_size), np.float32)
    by_size: dict[tuple[int, int], list[int]] = {}
    for position, (left, top, right, bottom) in enumerate(boxes):
        by_size.setdefault((right - left, bottom - top), []).append(position)
    for (crop_width, crop_height), positions in by_size.items():
        factor = resize_size / min(crop_width, crop_height)
        if max(crop_width, crop_height) * factor > 4 * resize_size:
            return None
        resized = rgb.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BICUBIC)
        pixels = np.asarray(resized, dtype=np.float32) * scale + offset
        region_width = max(crop_size, round(crop_width * factor))
        region_height = max(crop_size, round(crop_height * factor))
        for position in positions:
            left, top = boxes[position][:2]
            x = min(round(left * factor) + (region_width - crop_size) // 2, pixels.shape[1] - crop_size)
            y = min(round(top * factor) + (region_height - crop_size) // 2, pixels.shape[0] - crop_size)
            out[position] = pixels[max(0, y) : max(0, y) + crop_size, max(0, x) : max(0, x) + crop_size].transpose(2, 0, 1)
    return out


def _make_session(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
