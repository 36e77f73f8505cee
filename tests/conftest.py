"""Shared fixtures: real photos from packages, a real encoder, real catalogues."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.demo import DemoDataMissing, build_demo_catalogue_folder, list_stamps
from lookalike.encoders import DEFAULT_MODEL, load_encoder
from lookalike.engine import Engine

REPO = Path(__file__).resolve().parents[1]


def textured_stamps(stamps, count: int) -> list:
    """(stamp, cutout) for large, colourful, asymmetric stamps: objects with enough detail to verify point by point."""
    from PIL import ImageOps

    from lookalike.demo import load_cutout, on_white

    chosen = []
    for stamp in stamps:
        cutout = load_cutout(stamp)
        white = on_white(cutout)
        saturation = np.asarray(white.convert("HSV"))[..., 1].mean()
        asymmetry = np.abs(np.asarray(white, np.float32) - np.asarray(ImageOps.mirror(white), np.float32)).mean()
        if saturation > 60 and asymmetry > 20 and min(cutout.size) >= 300:
            chosen.append((stamp, cutout))
            if len(chosen) == count:
                return chosen
    pytest.fail("not enough textured stamps")


def hue_turned(image, degrees: int = 120):
    """A colour variant: the same picture with every hue turned."""
    from PIL import Image

    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + degrees * 256 // 360) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


@pytest.fixture(scope="session")
def encoder():
    return load_encoder(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_encoder():
    """For logic tests: a real but tiny encoder (tests/tiny_encoder.py), no model to load."""
    from tests.tiny_encoder import TinyEncoder

    return TinyEncoder()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus server (tests/milvus_server.py), started once for the session."""
    from tests.milvus_server import MilvusStandalone

    server = MilvusStandalone(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL 16 server with pgvector (tests/postgres_server.py), started once for the session."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    import uuid

    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:12]}")


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


def relisted_demo(demo_engine: Engine, folder: Path, encoder, reprice) -> Engine:
    """The demo's lots (their real photos and vectors) in a new catalogue, each given the price and sale date
    ``reprice(item, rng)`` returns: (price, sold_at)."""
    from lookalike import Item

    engine = Engine(folder, encoder=encoder)
    rng = np.random.default_rng(11)
    items, vectors = [], []
    for item in demo_engine.catalog.items():
        price, sold_at = reprice(item, rng)
        items.append(Item(item.id, item.image_path, item.title, item.category, price, "EUR", sold_at, dict(item.extra)))
        vectors.append(demo_engine.catalog.vectors_for(np.array([item.photos[0].key]), demo_engine.model_id)[0])
    engine.add_vectors(items, np.stack(vectors))
    return engine


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, input: bytes | None = None):
    """Run the real `lookalike` command in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=600,
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_catalog(source: Engine, target: Path) -> Path:
    """A consistent copy of a catalogue's SQLite file (the index is rebuilt from it)."""
    import sqlite3

    target.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(target / "catalog.sqlite") as destination:
        sqlite3.connect(source.directory / "catalog.sqlite").backup(destination)
    return target


class Server:
    """A real `lookalike serve` process on localhost."""

    def __init__(self, catalog: Path, env: dict, options: tuple[str, ...] = (), port: int | None = None):
        import time
        import urllib.request

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(catalog.parent / f"server-{self.port}.log", "a")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lookalike", "--catalog", str(catalog), *options, "serve", "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/api/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


TOKEN = "test-token-1f2e3d"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (Playwright's own browser download cannot work offline)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: apt-get install chromium (make test's setup does this as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory, demo_engine):
    """The demo catalogue served with writes enabled, private URLs allowed (for the
    test's own local image server), a 2 MB upload / 4 MP pixel limit, and room to queue every request the
    tests send at once (refusing when full is tests/test_overload.py's subject)."""
    catalog = copy_catalog(demo_engine, tmp_path_factory.mktemp("served") / "catalog")
    running = Server(catalog, {"LOOKALIKE_API_TOKEN": TOKEN, "LOOKALIKE_ALLOW_PRIVATE_URLS": "1",
                               "LOOKALIKE_MAX_UPLOAD_MB": "2", "LOOKALIKE_MAX_PIXELS": "4000000",
                               "LOOKALIKE_SEARCH_QUEUE": "64"})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def locked_server(tmp_path_factory, demo_engine):
    """The demo catalogue served with the defaults: no token (writes off), private URLs refused."""
    catalog = copy_catalog(demo_engine, tmp_path_factory.mktemp("locked") / "catalog")
    env = {"LOOKALIKE_API_TOKEN": "", "LOOKALIKE_ALLOW_PRIVATE_URLS": ""}
    running = Server(catalog, env)
    yield running
    running.stop()
