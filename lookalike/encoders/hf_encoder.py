"""Bring your own model: a CLIP or DINOv2 checkpoint in Hugging Face format,
read offline from a local folder or from the local Hugging Face cache.

    --model hf:/path/to/folder            (config.json, model.safetensors, preprocessor_config.json, tokenizer files)
    --model hf:openai/clip-vit-base-patch32   (already in ~/.cache/huggingface; nothing is downloaded)

The image tower (and, for CLIP, the text tower) is exported to ONNX once with
torch and served by onnxruntime, like the built-in models. CLIP vectors are its
projected image embeddings, so `lookalike search --text` works on a catalogue
embedded with a CLIP model; DINOv2 vectors are the CLS token after the final
layer norm. Preprocessing follows the checkpoint's preprocessor_config.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encoders.base import l2_normalise
from lookalike.encoders.onnx_encoder import _file_digest, _make_session, cache_dir, resize_centre_crop

HF_GRAPH_VERSION = 1
SUPPORTED = ("clip", "dinov2")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ModelLoadError(ValueError):
    pass


def require_hf_extra(*modules: str) -> None:
    """hf: models need torch (to export once) and transformers, which a plain install leaves out."""
    import importlib.util

    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ModelLoadError(f"hf: models need {' and '.join(missing)}, which lookalike installs only as an extra: "
                             "pip install 'lookalike[hf]'")


def resolve_local(source: str) -> Path:
    """A folder, or a repo id already in the local Hugging Face cache; never downloads."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ModelLoadError(f"{source}: expected a folder with config.json and the weights")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any hub error means: not available offline
        raise ModelLoadError(f"{source}: not a folder and not in the local Hugging Face cache "
                             f"({type(error).__name__}); lookalike never downloads models") from None


def _first_tensor(output):
    """transformers returns a tensor or, since v5, an output object whose pooler_output holds it."""
    return output if hasattr(output, "shape") else output.pooler_output


class HuggingFaceEncoder:
    """A local CLIP or DINOv2 checkpoint served by onnxruntime."""

    def __init__(self, source: str, threads: int | None = None, cache_root: str | os.PathLike | None = None):
        self.folder = resolve_local(source)
        config_file = self.folder / "config.json"
        if not config_file.exists():
            raise ModelLoadError(f"{self.folder}: no config.json")
        config = json.loads(config_file.read_text())
        self.model_type = config.get("model_type")
        if self.model_type not in SUPPORTED:
            raise ModelLoadError(f"{self.folder}: model type {self.model_type!r} is not supported (use {', '.join(SUPPORTED)})")
        weights = next((self.folder / name for name in WEIGHT_FILES if (self.folder / name).exists()), None)
        if weights is None:
            raise ModelLoadError(f"{self.folder}: no weights ({' or '.join(WEIGHT_FILES)})")
        self._read_preprocessing(config)
        digest = _file_digest(weights)
        self.model_id = f"hf:{self.model_type}:{digest}:{self.image_size}"
        stem = cache_dir(cache_root) / f"hf-{self.model_type}-{digest}-g{HF_GRAPH_VERSION}"
        self.has_text = self.model_type == "clip"
        vision_path, text_path = Path(f"{stem}-vision.onnx"), Path(f"{stem}-text.onnx")
        if not vision_path.exists() or (self.has_text and not text_path.exists()):
            self._export(vision_path, text_path)
        self._vision = _make_session(vision_path, threads)
        self.dim = int(self._vision.get_outputs()[0].shape[1])
        self._text = _make_session(text_path, threads) if self.has_text else None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _read_preprocessing(self, config: dict) -> None:
        processor_file = self.folder / "preprocessor_config.json"
        processor = json.loads(processor_file.read_text()) if processor_file.exists() else {}
        vision = config.get("vision_config", config)
        crop = processor.get("crop_size", vision.get("image_size", 224))
        self.image_size = int(crop["height"] if isinstance(crop, dict) else crop)
        size = processor.get("size", self.image_size)
        resize = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        self.resize_size = int(resize or self.image_size) if processor.get("do_center_crop", True) else self.image_size
        self.decode_size = self.resize_size
        mean = np.asarray(processor.get("image_mean", (0.5, 0.5, 0.5)), np.float32)
        std = np.asarray(processor.get("image_std", (0.5, 0.5, 0.5)), np.float32)
        self._scale = (1.0 / (255.0 * std)).reshape(1, 1, 3)
        self._offset = (-mean / std).reshape(1, 1, 3)

    def _export(self, vision_path: Path, text_path: Path) -> None:
        require_hf_extra("torch", "transformers")
        import torch
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()
        except Exception as error:  # noqa: BLE001 - a broken checkpoint is the user's input: say what failed
            raise ModelLoadError(f"{self.folder}: cannot load the model: {str(error).splitlines()[0][:200]}") from None
        model_type = self.model_type

        class Vision(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                if model_type == "clip":
                    features = _first_tensor(self.model.get_image_features(pixel_values=pixels))
                else:
                    features = self.model(pixel_values=pixels).pooler_output
                return torch.nn.functional.normalize(features, dim=1)

        class Text(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                features = _first_tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
                return torch.nn.functional.normalize(features, dim=1)

        with tempfile.TemporaryDirectory(dir=vision_path.parent) as scratch, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scratch_vision = Path(scratch) / "vision.onnx"
            pixels = torch.zeros(2, 3, self.image_size, self.image_size)
            torch.onnx.export(Vision().eval(), (pixels,), str(scratch_vision), input_names=["pixels"],
                              output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                              opset_version=17, dynamo=False)
            if self.has_text:
                scratch_text = Path(scratch) / "text.onnx"
                tokens = torch.ones(2, 8, dtype=torch.int64)
                torch.onnx.export(Text().eval(), (tokens, tokens), str(scratch_text),
                                  input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                                  dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                                "embedding": {0: "batch"}},
                                  opset_version=17, dynamo=False)
                os.replace(scratch_text, text_path)
            os.replace(scratch_vision, vision_path)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return resize_centre_crop(image, self.resize_size, self.image_size, self._scale, self._offset)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:  # one run at a time, as in onnx_encoder
            return l2_normalise(self._vision.run(["embedding"], {"pixels": np.asarray(batch, np.float32)})[0])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of texts, comparable with this model's image vectors (CLIP only)."""
        if self._text is None:
            raise ModelLoadError(f"{self.model_type} has no text tower: text search needs a CLIP model")
        with self._lock:
            if self._tokenizer is None:
                require_hf_extra("transformers")
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            tokens = self._tokenizer(list(texts), padding=True, truncation=True, return_tensors="np")
            feeds = {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": tokens["attention_mask"].astype(np.int64)}
            return l2_normalise(self._text.run(["embedding"], feeds)[0])
