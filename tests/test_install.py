"""The built wheel installs into a clean virtualenv without torch, CUDA or scikit-image, and the demo (index and
search) runs there with the model built and quantised from the packaged files. Slow: it installs from PyPI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "triton", "nvidia-", "scikit-image", "scipy", "transformers")

pytestmark = pytest.mark.slow


def run(*command, cwd: Path = ROOT, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def folder_megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink()) / 1e6


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    scratch = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "build", "--wheel", "--outdir", scratch / "dist", ROOT)
    wheel = next((scratch / "dist").glob("lookalike-*.whl"))
    venv = scratch / "venv"
    run(sys.executable, "-m", "venv", venv)
    before = folder_megabytes(venv)
    run(venv / "bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel)
    print(f"\ninstalled: {folder_megabytes(venv) - before:.0f} MB over a fresh venv ({before:.0f} MB)")
    return venv


def test_the_wheel_resolves_nothing_heavy(clean_venv):
    listed = json.loads(run(clean_venv / "bin/python", "-m", "pip", "list", "--format", "json").stdout)
    names = sorted(package["name"].lower() for package in listed)
    print(f"\n{len(names)} packages: {', '.join(names)}")
    assert not [name for name in names if name.startswith(HEAVY)]
    assert "onnxruntime" in names and "lookalike" in names
    missing = subprocess.run([clean_venv / "bin/python", "-c", "import torch"], capture_output=True)
    assert missing.returncode != 0


def test_the_demo_indexes_and_searches_in_the_clean_venv(clean_venv, tmp_path):
    env = {**os.environ, "LOOKALIKE_CACHE": str(tmp_path / "cache"), "PATH": f"{clean_venv / 'bin'}:/usr/bin:/bin"}
    env.pop("PYTHONPATH", None)
    prepared = json.loads(run(clean_venv / "bin/lookalike", "prepare", "--json", cwd=tmp_path, env=env).stdout)
    print(f"\nfirst prepare (build the graph, quantise from the shipped calibration): {prepared['seconds']} s")
    assert prepared["model_id"].endswith(":int8")
    (tmp_path / "data").symlink_to(ROOT / "data")  # the setup's Debian photos, found from the current folder
    demo = run(clean_venv / "bin/lookalike", "--catalog", tmp_path / "catalog", "demo", "--no-serve", "--queries", "1",
               cwd=tmp_path, env=env)
    print(demo.stdout[:1500])
    assert "embedded" in demo.stdout and "results" in demo.stdout
    photo = next((tmp_path / "catalog/queries").glob("phone-photo-of-*.jpg"))  # a new photo of a catalogue lot
    found = run(clean_venv / "bin/lookalike", "--catalog", tmp_path / "catalog", "search", photo, "--json",
                cwd=tmp_path, env=env)
    hits = json.loads(found.stdout.splitlines()[0])["results"]
    print(f"{photo.name}: {[(hit['id'], hit['score']) for hit in hits[:3]]}")
    assert hits[0]["id"].endswith("/" + photo.stem.removeprefix("phone-photo-of-"))


CLASSIFY = """
import json, sys
import numpy as np
from lookalike.encoders import load_encoder
from lookalike.images import decode_image
encoder = load_encoder()
def top1(path):
    return int(np.argmax(encoder.run(encoder.preprocess(decode_image(path))[None])[1][0]))
print(json.dumps({"modules": sorted(name for name in ("torch", "skimage", "scipy") if name in sys.modules),
                  "classes": [top1(path) for path in sys.argv[1:]]}))
"""


def test_the_model_classifies_real_photos_without_torch(clean_venv, tmp_path, foolbox_photos):
    import skimage

    photos = Path(skimage.__file__).parent / "data"  # read as plain image files: scikit-image is not in the venv
    paths = [photos / "coffee.png", photos / "chelsea.png", *(path for path, _ in foolbox_photos)]
    env = {**os.environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    found = json.loads(run(clean_venv / "bin/python", "-c", CLASSIFY, *paths, cwd=tmp_path, env=env).stdout)
    assert found["modules"] == []
    espresso, cat, *imagenet = found["classes"]
    assert espresso == 967 and cat in range(281, 286)
    correct = sum(found == label for found, (_, label) in zip(imagenet, foolbox_photos))
    print(f"\nwithout torch: espresso, cat, {correct} of 20 ImageNet photos")
    assert correct >= 17
