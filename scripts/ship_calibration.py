"""Write the int8 calibration the package ships for each built-in model at its default size (the activation ranges
over scikit-image's photos, as onnxruntime's calibration cache) into lookalike/encoders/calibration/. Run it after a
change to a graph (GRAPH_VERSION) or to the calibration photos; tests/test_model_export.py checks the shipped files
against a fresh calibration."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lookalike.encoders.onnx_encoder import BACKBONES, OnnxImageEncoder, _quantise, shipped_calibration


def main() -> None:
    for name in BACKBONES:
        with tempfile.TemporaryDirectory() as scratch:
            encoder = OnnxImageEncoder(f"{name}:avg", cache_root=scratch)
            target = shipped_calibration(encoder.stem)
            for stale in target.parent.glob(f"{name}-avg-{encoder.image_size}-*.json"):
                stale.unlink()
            _quantise(encoder.onnx_path, Path(scratch) / "int8.onnx", encoder.preprocess, save_calibration=target)
            print(f"wrote {target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target}")


if __name__ == "__main__":
    main()
