"""The engine on Milvus, embedded (Milvus Lite) and a real Milvus server (tests/milvus_server.py): the real CLI
indexes, filters natively on category and price, removes, survives a restart, and rebuilds the collection from
SQLite when the Milvus side is lost."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli


# The CLI runs take about 30 s (Milvus Lite) and 40 s (the real server): the slow tier (and CI) runs them; the
# index contract tests on both stay in the default tier.
@pytest.fixture(params=[pytest.param("lite", marks=pytest.mark.slow), pytest.param("server", marks=pytest.mark.slow)])
def milvus_uri(request, tmp_path) -> str:
    if request.param == "lite":
        (tmp_path / "vectors").mkdir()
        return str(tmp_path / "vectors" / "milvus.db")
    return request.getfixturevalue("milvus_server").uri


def lose_the_milvus_side(uri: str, tmp_path) -> None:
    if uri.startswith("http"):
        from pymilvus import MilvusClient

        MilvusClient(uri=uri).drop_collection("lookalike")
    else:
        shutil.rmtree(tmp_path / "vectors")
        (tmp_path / "vectors").mkdir()


def test_cli_on_milvus_filters_removes_and_rebuilds(tmp_path, demo_folder, milvus_uri):
    catalog = str(tmp_path / "catalog")
    milvus = ["--catalog", catalog, "--index", "milvus", "--milvus-uri", milvus_uri]
    indexed = run_cli(*milvus, "index", "--metadata", str(demo_folder / "metadata.csv"), "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    info = json.loads(run_cli(*milvus, "info", "--json").stdout)
    assert info["index_backend"] == "milvus" and info["items"] >= 400

    query = str(demo_folder / "photos" / "vehicles" / "race" / "indycar.jpg")
    found = json.loads(run_cli(*milvus, "--query-mode", "single", "search", query, "-k", "5", "--json").stdout)
    assert found["results"][0]["id"] == "vehicles/race/indycar"

    filtered = json.loads(run_cli(*milvus, "--query-mode", "single", "search", query, "-k", "10", "--json",
                                  "--category", "food", "--min-price", "20", "--max-price", "40").stdout)["results"]
    assert len(filtered) == 10
    assert all(hit["category"] == "food" and 20 <= hit["price"] <= 40 for hit in filtered)

    more = json.loads(run_cli(*milvus, "search", "--id", "vehicles/race/indycar", "-k", "3", "--json").stdout)["results"]
    assert "vehicles/race/indycar" not in {hit["id"] for hit in more} and len(more) == 3

    assert run_cli(*milvus, "remove", "vehicles/race/indycar").returncode == 0
    after = json.loads(run_cli(*milvus, "--query-mode", "single", "search", query, "-k", "5", "--json").stdout)
    assert "vehicles/race/indycar" not in {hit["id"] for hit in after["results"]}
    assert run_cli(*milvus, "check").returncode == 0

    # The Milvus side lost: rebuilt from SQLite, the source of truth, on the next start.
    lose_the_milvus_side(milvus_uri, tmp_path)
    rebuilt = run_cli(*milvus, "check")
    assert rebuilt.returncode == 0, rebuilt.stdout
    again = json.loads(run_cli(*milvus, "--query-mode", "single", "search",
                               str(demo_folder / "photos" / "food" / "fruit" / "Cherry_Stella.jpg"), "-k", "1", "--json").stdout)
    assert again["results"][0]["id"] == "food/fruit/Cherry_Stella"


@pytest.mark.slow  # about 40 s; make test-slow (and CI) runs it
def test_killing_the_milvus_server_mid_indexing_loses_nothing(tmp_path, demo_folder, milvus_server):
    """kill -9 the Milvus server while `lookalike index` writes to it: the command stops with one clear line,
    what SQLite committed stays, and once a Milvus server is back the rerun completes and the collection is
    rebuilt from SQLite. (The server comes back on fresh data: restarting on a killed server's data waits a
    minute or more for its dead sessions, see tests/milvus_server.py.)"""
    import sqlite3
    import subprocess
    import sys
    import time

    catalog = tmp_path / "catalog"
    metadata = str(demo_folder / "metadata.csv")

    def milvus() -> list[str]:
        return ["--catalog", str(catalog), "--index", "milvus", "--milvus-uri", milvus_server.uri]

    indexing = subprocess.Popen([sys.executable, "-m", "lookalike", *milvus(), "index", "--metadata", metadata, "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = 0
    deadline = time.monotonic() + 120
    while committed < 60 and indexing.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if (catalog / "catalog.sqlite").exists():
            try:
                with sqlite3.connect(catalog / "catalog.sqlite", timeout=1) as db:
                    committed = db.execute("SELECT count(*) FROM items").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    milvus_server.kill()
    _, stderr = indexing.communicate(timeout=300)
    if indexing.returncode != 0:  # it was still writing: one line, "unavailable", no traceback
        assert indexing.returncode == 3 and stderr.count("\n") == 1 and "unavailable" in stderr, stderr

    milvus_server.start()
    again = run_cli(*milvus(), "index", "--metadata", metadata, "--quiet")
    assert again.returncode == 0, again.stderr
    assert run_cli(*milvus(), "check").returncode == 0
    info = json.loads(run_cli(*milvus(), "info", "--json").stdout)
    assert info["items"] >= 400 and info["index_backend"] == "milvus"
    query = str(demo_folder / "photos" / "vehicles" / "race" / "indycar.jpg")
    found = json.loads(run_cli(*milvus(), "--query-mode", "single", "search", query, "-k", "1", "--json").stdout)
    assert found["results"][0]["id"] == "vehicles/race/indycar"


@pytest.mark.slow  # stops and restarts the real Milvus server; make test-slow (and CI) runs it
def test_a_server_answers_503_while_milvus_is_down_and_heals_by_itself(tmp_path, demo_engine, foolbox_photos,
                                                                      milvus_server):
    """Milvus stopped under a running `lookalike serve`: searches and adds answer 503 (an add still reaches the
    SQLite store), and once Milvus is back on its data the server answers again by itself, the lot added during
    the outage found by its photo."""
    import time
    import uuid

    import httpx

    from tests.conftest import TOKEN, Server, copy_catalog

    catalog = copy_catalog(demo_engine, tmp_path / "served" / "catalog")
    options = ("--index", "milvus", "--milvus-uri", milvus_server.uri, "--index-option",
               f"collection=outage_{uuid.uuid4().hex[:10]}", "--query-mode", "single")
    server = Server(catalog, {"LOOKALIKE_API_TOKEN": TOKEN}, options)
    photo = foolbox_photos[3][0]

    def search() -> httpx.Response:
        return httpx.post(f"{server.url}/api/search", timeout=120, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})

    try:
        assert search().status_code == 200
        milvus_server.stop()
        added = httpx.post(f"{server.url}/api/items", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                           data={"id": "added-during-outage"}, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert added.status_code == 503 and added.headers["Retry-After"], added.text
        assert search().status_code == 503
        milvus_server.start(fresh=False)
        deadline = time.monotonic() + 120
        while (answer := search()).status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert answer.status_code == 200 and server.alive(), answer.text
        assert answer.json()["results"][0]["id"] == "added-during-outage"
    finally:
        server.stop()
