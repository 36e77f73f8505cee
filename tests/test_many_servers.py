"""Several search servers, one catalogue: two real `lookalike serve` processes on one PostgreSQL store and one
shared index (a pgvector table, or a collection on the real Milvus server), or each with its own hnsw index that
follows the store's change counter. A lot written through one is seen by
the other at once, without a restart; one server killed -9 while clients write through both loses nothing
acknowledged, and nothing removed comes back."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from lookalike.store import Catalog
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


# The default tier runs pgvector; own hnsw indexes and the real Milvus server (its start alone is 10 s) run in the
# slow tier, which CI runs too.
@pytest.fixture(params=["pgvector", pytest.param("hnsw", marks=pytest.mark.slow), pytest.param("milvus", marks=pytest.mark.slow)])
def shared_setup(request, tmp_path, demo_engine, postgres_url) -> tuple[tuple[str, ...], dict]:
    """The demo catalogue copied into a fresh PostgreSQL database; the servers' index options and environment."""
    target = Catalog(tmp_path / "copy", store=postgres_url)
    demo_engine.catalog.copy_to(target)
    target.close()
    if request.param in ("pgvector", "hnsw"):  # hnsw: each server's own index, following the store's changes
        options = ("--index", request.param)
    else:
        milvus = request.getfixturevalue("milvus_server")
        options = ("--index", "milvus", "--milvus-uri", milvus.uri, "--index-option",
                   f"collection=shared_{uuid.uuid4().hex[:10]}")
    env = {"LOOKALIKE_STORE": postgres_url, "LOOKALIKE_API_TOKEN": TOKEN, "LOOKALIKE_SEARCH_QUEUE": "64"}
    return (*options, "--query-mode", "single"), env


def start(tmp_path, name: str, shared_setup, port: int | None = None) -> Server:
    options, env = shared_setup
    return Server(tmp_path / name, env, options, port)  # each its own folder, as on its own machine


def add(server: Server, lot_id: str, photo) -> httpx.Response:
    return httpx.post(f"{server.url}/api/items", headers=AUTH, timeout=60, data={"id": lot_id, "category": "new"},
                      files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})


def top_ids(server: Server, photo, k: int = 5) -> list[str]:
    response = httpx.post(f"{server.url}/api/search", params={"k": k}, timeout=60,
                          files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def seen_within(seconds: float, check) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_lot_written_through_one_server_is_seen_by_the_other_at_once(tmp_path, shared_setup, foolbox_photos):
    first, second = start(tmp_path, "a", shared_setup), start(tmp_path, "b", shared_setup)
    try:
        photo = foolbox_photos[0][0]
        assert add(first, "new-lot", photo).status_code == 201
        assert httpx.get(f"{second.url}/api/items/new-lot").status_code == 200
        assert seen_within(1.0, lambda: top_ids(second, photo)[0] == "new-lot")

        assert httpx.delete(f"{second.url}/api/items/new-lot", headers=AUTH).status_code == 200
        assert httpx.get(f"{first.url}/api/items/new-lot").status_code == 404
        assert "new-lot" not in top_ids(first, photo)
        assert first.alive() and second.alive()
    finally:
        first.stop()
        second.stop()


def test_killing_one_server_while_clients_write_through_both_loses_nothing(tmp_path, shared_setup, demo_engine,
                                                                           foolbox_photos):
    first, second = start(tmp_path, "a", shared_setup), start(tmp_path, "b", shared_setup)
    added, removed, lock = {}, [], threading.Lock()
    doomed = [item.id for item in list(demo_engine.catalog.items())[:30]]

    def write(worker: int) -> None:
        for step in range(15):
            server = (first, second)[(worker + step) % 2]
            lot_id, photo = f"lot-{worker}-{step}", foolbox_photos[(worker * 15 + step) % len(foolbox_photos)][0]
            try:
                if add(server, lot_id, photo).status_code == 201:
                    with lock:
                        added[lot_id] = photo
                victim = doomed[worker * 15 + step]
                if httpx.delete(f"{server.url}/api/items/{victim}", headers=AUTH, timeout=60).status_code == 200:
                    with lock:
                        removed.append(victim)
            except httpx.TransportError:
                pass  # the killed server: not acknowledged

    writers = [threading.Thread(target=write, args=(worker,)) for worker in range(2)]
    for writer in writers:
        writer.start()
    assert seen_within(120, lambda: len(added) >= 6)
    first.process.kill()
    first.process.wait()
    for writer in writers:
        writer.join()
    restarted = start(tmp_path, "a", shared_setup, first.port)  # heals the shared index from the store as it starts
    try:
        assert len(added) >= 15 and len(removed) >= 15
        for server in (restarted, second):
            for lot_id in added:
                assert httpx.get(f"{server.url}/api/items/{lot_id}").status_code == 200, lot_id
            for lot_id in removed:
                assert httpx.get(f"{server.url}/api/items/{lot_id}").status_code == 404, lot_id
        for lot_id, photo in list(added.items())[:5]:  # searchable through both
            for server in (restarted, second):
                assert lot_id in top_ids(server, photo, k=50)
        removed_photos = [item.photos[0].path for item in demo_engine.catalog.items() if item.id in removed]
        for path in removed_photos[:5]:
            for server in (restarted, second):
                assert not set(top_ids(server, Path(path))) & set(removed)
    finally:
        restarted.stop()
        second.stop()

