"""Load: 32 concurrent HTTP clients for 30 s (LOOKALIKE_LOAD_SECONDS), and for 5 minutes in the slow tier
against a real server on a copy of the demo catalogue, mixing photo searches,
adds and deletes. More clients than the server's embedding work allows: searches and adds beyond it are
refused with 503 and Retry-After (tests/test_overload.py), and no other 5xx; at the end no acknowledged write
is lost and no item appears that was never acknowledged, checked against a ledger of every write."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from lookalike.demo import backgrounds, load_cutout, make_phone_photo
from tests.conftest import TOKEN, Server, copy_catalog, run_cli

CLIENTS = 32
#: The default run is a short one; the long one is marked slow (make test-slow, and CI runs it).
SHORT_SECONDS = float(os.environ.get("LOOKALIKE_LOAD_SECONDS", "30"))
LONG_SECONDS = 300.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.added: set[str] = set()
        self.deleted: set[str] = set()
        self.uncertain: set[str] = set()  # the request failed in transit: either outcome is correct
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.accepted: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: list[str] = []

    def record(self, operation: str, status: int, seconds: float) -> None:
        with self.lock:
            self.latencies[operation].append(seconds * 1000)
            if status < 400:
                self.accepted[operation].append(seconds * 1000)
            self.statuses[operation][status] += 1


@pytest.fixture(scope="module")
def load_server(tmp_path_factory, demo_engine):
    catalog = copy_catalog(demo_engine, tmp_path_factory.mktemp("load") / "catalog")
    running = Server(catalog, {"LOOKALIKE_API_TOKEN": TOKEN})
    yield running, catalog
    running.stop()


def client_loop(url: str, worker: int, deadline: float, photos: list[bytes], ledger: Ledger) -> None:
    rng = random.Random(worker)
    mine: list[str] = []
    with httpx.Client(base_url=url, timeout=180) as client:
        count = 0
        while time.monotonic() < deadline:
            count += 1
            roll = rng.random()
            started = time.perf_counter()
            try:
                if roll < 0.25 or (roll < 0.4 and not mine):
                    item_id = f"load/{worker}/{count}"
                    response = client.post("/api/items", headers=AUTH, data={"id": item_id, "category": "load", "price": "12"},
                                           files={"image": ("p.jpg", rng.choice(photos))})
                    operation = "add"
                    if response.status_code == 201:
                        with ledger.lock:
                            ledger.added.add(item_id)
                        mine.append(item_id)
                elif roll < 0.4:
                    item_id = mine.pop(rng.randrange(len(mine)))
                    response = client.delete(f"/api/items/{quote(item_id, safe='/')}", headers=AUTH)
                    operation = "delete"
                    if response.status_code == 200:
                        with ledger.lock:
                            ledger.deleted.add(item_id)
                    else:
                        ledger.failures.append(f"delete {item_id}: {response.status_code} {response.text[:100]}")
                else:
                    response = client.post("/api/search", params={"k": 10}, files={"image": ("q.jpg", rng.choice(photos))})
                    operation = "search"
                if response.status_code == 503 and not response.headers.get("Retry-After"):
                    ledger.failures.append(f"{operation}: 503 without Retry-After")
                    if response.status_code == 200 and not response.json()["results"]:
                        ledger.failures.append("a search returned nothing")
            except httpx.HTTPError as error:
                ledger.failures.append(f"transport error: {type(error).__name__}")
                if roll < 0.25:
                    with ledger.lock:
                        ledger.uncertain.add(f"load/{worker}/{count}")
                continue
            ledger.record(operation, response.status_code, time.perf_counter() - started)
            if response.status_code == 503:  # as a polite client does; the loop ends at the deadline all the same
                time.sleep(min(float(response.headers.get("Retry-After", "1")), max(0.0, deadline - time.monotonic())))


def all_ids(client: httpx.Client) -> set[str]:
    ids, page = set(), 1
    while True:
        body = client.get("/api/items", params={"page": page, "page_size": 200}).json()
        ids |= {item["id"] for item in body["items"]}
        if page * 200 >= body["total"]:
            return ids
        page += 1


@pytest.mark.parametrize("seconds", [pytest.param(SHORT_SECONDS, id="short"),
                                     pytest.param(LONG_SECONDS, id="300s", marks=pytest.mark.slow)])
def test_32_clients_search_add_and_delete_without_loss(load_server, stamps, seconds):
    server, catalog = load_server
    rng = np.random.default_rng(11)
    pool = backgrounds()
    photos = [make_phone_photo(load_cutout(stamps[int(i)]), pool[int(rng.integers(len(pool)))], rng)
              for i in rng.choice(len(stamps), 40, replace=False)]
    ledger = Ledger()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        initial = all_ids(client)
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, args=(server.url, worker, deadline, photos, ledger))
               for worker in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.alive()

    requests = sum(len(values) for values in ledger.latencies.values())
    for operation in ("search", "add", "delete"):
        statuses = dict(ledger.statuses[operation])
        accepted = ledger.accepted[operation]
        refused = statuses.get(503, 0)
        total = sum(statuses.values())
        print(f"{operation}: {total} requests, statuses {statuses}, refused {refused / max(total, 1):.0%}; "
              f"accepted p50 {np.percentile(accepted, 50):.0f} ms, p99 {np.percentile(accepted, 99):.0f} ms")
    print(f"{CLIENTS} clients, {seconds:.0f} s: {requests} requests, {len(ledger.failures)} failures, "
          f"{len(ledger.added)} adds and {len(ledger.deleted)} deletes acknowledged")
    server_errors = {operation: {status: count for status, count in statuses.items() if status >= 500 and status != 503}
                     for operation, statuses in ledger.statuses.items()}
    assert not any(server_errors.values()), server_errors
    assert not ledger.failures, ledger.failures[:5]
    expected_statuses = {"search": {200, 503}, "add": {201, 503}, "delete": {200}}
    for operation, statuses in ledger.statuses.items():
        assert set(statuses) <= expected_statuses[operation], (operation, dict(statuses))
    assert ledger.statuses["search"][200] > 0 and ledger.added and ledger.deleted

    with httpx.Client(base_url=server.url, timeout=60) as client:
        present = all_ids(client)
        for item_id in sorted(ledger.added - ledger.deleted)[:50]:  # stored and searchable, not just listed
            found = client.post("/api/search/item", params={"k": 1}, json={"item_id": item_id})
            assert found.status_code == 200, item_id
    expected = initial | (ledger.added - ledger.deleted)
    lost = expected - present - ledger.uncertain
    phantom = present - expected - ledger.uncertain
    assert not lost, f"{len(lost)} acknowledged items lost, e.g. {sorted(lost)[:3]}"
    assert not phantom, f"{len(phantom)} items never acknowledged, e.g. {sorted(phantom)[:3]}"
    server.stop()
    check = run_cli("--catalog", str(catalog), "check")
    assert check.returncode == 0, check.stdout
