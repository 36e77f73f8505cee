"""The models' ONNX graphs are built from the packaged weights without torch and equal torch's own export; the
int8 models quantise from the calibration the package ships, which equals a fresh calibration."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from lookalike.encoders.onnx_encoder import BACKBONES, ImageModelSpec, OnnxImageEncoder, _export, _quantise
from lookalike.encoders.torch_weights import CheckpointError, read_state_dict
from lookalike.images import decode_image


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="the reference export needs torch (the test extra installs it)")


def run(path, arrays) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": arrays})


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_weights_read_without_torch_are_torch_s(name, torch):
    path = BACKBONES[name].weights()
    ours, reference = read_state_dict(path), torch.load(path, map_location="cpu", weights_only=True)
    assert set(ours) == set(reference) and len(ours) > 250
    for key, tensor in reference.items():
        assert ours[key].shape == tuple(tensor.shape) and np.array_equal(ours[key], tensor.numpy()), key


def test_both_checkpoint_formats_and_no_code_in_them(tmp_path, torch):
    state = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), "steps": torch.tensor(7)}
    for zip_format in (True, False):
        path = tmp_path / f"zip-{zip_format}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        read = read_state_dict(path)
        assert np.array_equal(read["weight"], state["weight"].numpy()) and int(read["steps"]) == 7
    hostile = tmp_path / "hostile.pt"
    torch.save({"weight": torch.zeros(2), "payload": print}, hostile, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="print, which a weights file never needs"):
        read_state_dict(hostile)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "text.pt")


class RunsCode:
    def __reduce__(self):
        return print, ("this ran",)


def test_a_hostile_or_broken_checkpoint_is_refused_in_one_line(tmp_path, torch, capsys):
    (tmp_path / "header.pt").write_bytes(pickle.dumps(RunsCode()))  # code in the first pickle, before the magic number
    with pytest.raises(CheckpointError, match="print, which a weights file never needs"):
        read_state_dict(tmp_path / "header.pt")
    assert "this ran" not in capsys.readouterr().out
    torch.save({"w": torch.zeros(1)}, tmp_path / "one.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "one.pt").read_bytes()
    # The tensor claims 8 elements of its 1-element storage (size (1,) pickled as BININT1 1, TUPLE1 after offset 0).
    marker = b"K\x00K\x01\x85"
    assert data.count(marker) == 1
    (tmp_path / "past-the-end.pt").write_bytes(data.replace(marker, b"K\x00K\x08\x85"))
    with pytest.raises(CheckpointError, match="past the end"):
        read_state_dict(tmp_path / "past-the-end.pt")
    (tmp_path / "truncated.pt").write_bytes(data[:-3])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(tmp_path / "truncated.pt")


@pytest.mark.parametrize("spec", ["efficientnet-lite0:avg", "efficientnet-lite0:gem:288", "efficientnet-lite2:avg",
                                  "mobilenetv2:avg"])
def test_the_torch_free_export_gives_torch_s_features(spec, tmp_path, foolbox_photos, torch):
    from tests import torch_reference

    parsed = ImageModelSpec.parse(spec)
    encoder = OnnxImageEncoder(spec, cache_root=tmp_path)
    ours = tmp_path / "ours.onnx"
    _export(BACKBONES[parsed.name], parsed.pooling, encoder.image_size, ours)
    theirs = tmp_path / "torch.onnx"
    torch_reference.torch_export(parsed.name, parsed.pooling, encoder.image_size, theirs)
    arrays = np.stack([encoder.preprocess(decode_image(path)) for path, _ in foolbox_photos[:10]])
    for mine, reference in zip(run(ours, arrays), run(theirs, arrays), strict=True):
        assert mine.shape == reference.shape
        assert np.abs(mine - reference).max() <= 1e-4


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_shipped_int8_calibration_is_a_fresh_one(name, tmp_path, foolbox_photos):
    shipped = OnnxImageEncoder(f"{name}:avg:int8", cache_root=tmp_path / "shipped")
    assert (Path(__file__).parents[1] / "lookalike/encoders/calibration" / f"{shipped.stem}.json").is_file()
    fresh = tmp_path / "fresh.onnx"
    _quantise(shipped.onnx_path.with_name(f"{shipped.stem}.onnx"), fresh, shipped.preprocess)  # no calibration given
    arrays = np.stack([shipped.preprocess(decode_image(path)) for path, _ in foolbox_photos[:10]])
    assert np.abs(run(fresh, arrays)[0] - shipped.embed_arrays(arrays)).max() <= 1e-4
