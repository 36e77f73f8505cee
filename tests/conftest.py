"""Shared fixtures: real photos from packages, a real encoder, real catalogues."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.encoders import DEFAULT_MODEL, load_encoder
from lookalike.engine import Engine
from lookalike.engine.demo import DemoDataMissing, build_demo_catalogue_folder, list_stamps

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def encoder():
    return load_encoder(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def stamps():
    try:
        return list_stamps()
    except DemoDataMissing as error:
        pytest.fail(f"{error} (the tests need the demo photos: run make setup)")


@pytest.fixture(scope="session")
def foolbox_photos() -> list[tuple[Path, int]]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("foolbox's ImageNet photos are missing: pip install --no-deps foolbox==3.3.4 (make setup does)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    photos = sorted(folder.glob("imagenet_*.jpg"))
    return [(path, int(path.stem.split("_")[-1])) for path in photos]


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory, stamps) -> Path:
    """The demo catalogue's photos and metadata.csv (all ~440 real photos)."""
    folder = tmp_path_factory.mktemp("demo-photos")
    build_demo_catalogue_folder(folder, stamps)
    return folder


@pytest.fixture(scope="session")
def demo_engine(tmp_path_factory, demo_folder, encoder) -> Engine:
    """A real catalogue of the demo photos, built once for the session. Read-only: do not mutate."""
    engine = Engine(tmp_path_factory.mktemp("demo-catalog"), encoder=encoder)
    report = engine.index_sources([], demo_folder / "metadata.csv")
    assert report.embedded >= 300 and not report.problems
    return engine


@pytest.fixture(scope="session")
def demo_vectors(demo_engine) -> tuple[np.ndarray, np.ndarray]:
    keys, vectors = zip(*demo_engine.catalog.vectors(demo_engine.model_id))
    return np.concatenate(keys), np.concatenate(vectors)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, input: bytes | None = None):
    """Run the real `lookalike` command in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=600,
    )
