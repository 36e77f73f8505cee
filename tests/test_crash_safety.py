"""Crash safety: `lookalike index` and the server killed with SIGKILL at random
points; afterwards the catalogue opens, `lookalike check` passes, nothing
acknowledged is lost and a rerun embeds only what was missing."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TOKEN, Server, copy_catalog, run_cli

#: Kills in the default run; the slow tier kills 20 times.
SHORT_KILLS = int(os.environ.get("LOOKALIKE_CRASH_KILLS", "6"))
LONG_KILLS = 20
FASHION = REPO / "data/debs/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory, demo_folder) -> tuple[Path, int]:
    """The demo photos plus 3,000 Fashion-MNIST product photos: a run of about 25 s."""
    folder = tmp_path_factory.mktemp("crash") / "photos"
    (folder / "demo").mkdir(parents=True)
    for path in sorted((demo_folder / "photos").rglob("*.jpg")):
        target = folder / "demo" / path.relative_to(demo_folder / "photos")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    with gzip.open(FASHION) as handle:
        pixels = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    (folder / "fashion").mkdir()
    for index in range(3000):
        Image.fromarray(255 - pixels[index]).resize((112, 112)).save(folder / "fashion" / f"{index:05d}.png")
    return folder, sum(1 for path in folder.rglob("*") if path.is_file())


def vectors_in(catalog: str) -> int:
    result = run_cli("--catalog", catalog, "info", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["vectors"]


def wait_for_progress(database: Path, before: int, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the run has stored vectors beyond ``before`` (read with SQLite, as another process would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
                if db.execute("SELECT COUNT(*) FROM photo_vectors").fetchone()[0] > before:
                    return
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.05)


def kill_and_resume(command: list[str], catalog: str, total: int, kills: int, seed: int) -> list[int]:
    """SIGKILL ``command`` ``kills`` times, half while it starts and half while it embeds, checking the catalogue
    after each kill; then let it finish and check it embedded exactly what was missing. Vectors after each kill."""
    rng = random.Random(seed)
    history = []
    for kill in range(kills):
        before = vectors_in(catalog) if Path(catalog, "catalog.sqlite").exists() else 0
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill % 2 == 0:
            time.sleep(rng.uniform(0.05, 1.0))  # while starting: opening the catalogue, walking, loading the model
        else:
            wait_for_progress(Path(catalog) / "catalog.sqlite", before, process)  # while embedding and writing
            # A quarter of a second of embedding is about 40 photos: 20 kills land well before the 3,439-photo run
            # ends, even on a machine faster than this one (a start takes about a second since it imports no torch).
            time.sleep(rng.uniform(0.0, 0.25))
        finished = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        check = run_cli("--catalog", catalog, "check")
        assert check.returncode == 0, f"after kill {kill + 1}: {check.stdout} {check.stderr}"
        after = vectors_in(catalog)
        assert before <= after <= total
        history.append(after)
        if finished:
            break
    final = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    done_before = history[-1]
    # The rerun embeds exactly what was missing and nothing twice.
    assert f"embedded {total - done_before} images" in final.stdout, final.stdout
    assert vectors_in(catalog) == total
    assert run_cli("--catalog", catalog, "check").returncode == 0
    return history


@pytest.mark.parametrize("kills", [pytest.param(SHORT_KILLS, id="short"),
                                   pytest.param(LONG_KILLS, id="20-kills", marks=pytest.mark.slow)])
def test_index_killed_at_random_points_resumes_without_loss(tmp_path, big_folder, kills):
    folder, total = big_folder
    catalog = str(tmp_path / "catalog")
    command = [sys.executable, "-m", "lookalike", "--catalog", catalog, "index", str(folder), "--quiet"]
    history = kill_and_resume(command, catalog, total, kills, seed=20261125)
    print(f"{len(history)} kills survived; vectors after each: {history}; total {total}")
    assert len(history) == kills and len(set(history)) > kills // 3  # the kills landed all along the run


@pytest.mark.slow  # about 25 s; the default tier kills a one-photo run
def test_multi_photo_import_killed_resumes_without_loss(tmp_path, big_folder):
    """Lots of five photos each (a folder each, --lot-per-folder): a lot is written whole or not at all."""
    folder, _ = big_folder
    lots = tmp_path / "lots"
    for number, path in enumerate(sorted((folder / "fashion").iterdir())[:1500]):
        target = lots / f"lot-{number // 5:03d}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    catalog = str(tmp_path / "catalog")
    command = [sys.executable, "-m", "lookalike", "--catalog", catalog, "index", str(lots), "--lot-per-folder", "--quiet"]
    history = kill_and_resume(command, catalog, 1500, 4, seed=7)
    print(f"multi-photo lots: {len(history)} kills survived; vectors after each: {history}")
    assert all(count % 5 == 0 for count in history)  # never part of a lot
    info = json.loads(run_cli("--catalog", catalog, "info", "--json").stdout)
    assert info["items"] == 300 and info["vectors"] == 1500


def test_server_killed_during_adds_keeps_every_acknowledged_write(tmp_path, demo_engine, demo_folder):
    catalog = copy_catalog(demo_engine, tmp_path / "served" / "catalog")
    photos = [path.read_bytes() for path in sorted((demo_folder / "photos").rglob("*.jpg"))[:40]]
    acknowledged: list[str] = []
    lock = threading.Lock()
    rng = random.Random(7)
    for round_number in range(3):
        server = Server(catalog, {"LOOKALIKE_API_TOKEN": TOKEN})
        stop = threading.Event()

        def writer(worker: int, url: str = server.url, round_number: int = round_number,
                   stop: threading.Event = stop) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                for count in range(10_000):
                    if stop.is_set():
                        return
                    item_id = f"crash/{round_number}/{worker}/{count}"
                    try:
                        response = client.post("/api/items", headers=AUTH, data={"id": item_id, "price": "10"},
                                               files={"image": ("p.jpg", photos[count % len(photos)])})
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if response.status_code == 201:
                        with lock:
                            acknowledged.append(item_id)

        threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(2.0, 5.0))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        stop.set()
        for thread in threads:
            thread.join()
        server.log.close()

    assert len(acknowledged) > 10
    server = Server(catalog, {"LOOKALIKE_API_TOKEN": TOKEN})
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            missing = [item_id for item_id in acknowledged
                       if client.get(f"/api/items/{quote(item_id, safe='/')}").status_code != 200]
            assert not missing, f"{len(missing)} acknowledged adds lost, e.g. {missing[:3]}"
            found = client.post("/api/search/item", params={"k": 1}, json={"item_id": acknowledged[-1]})
            assert found.status_code == 200
    finally:
        server.stop()
    check = run_cli("--catalog", str(catalog), "check")
    assert check.returncode == 0, check.stdout
    print(f"3 server kills survived; {len(acknowledged)} acknowledged adds, all present")
