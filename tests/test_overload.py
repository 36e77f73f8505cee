"""Graceful overload: bounded embedding work, a 503 with Retry-After at once beyond it, and the queue in /metrics."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from lookalike.api.limits import Admission, Busy
from lookalike.demo import backgrounds, load_cutout, make_phone_photo
from tests.conftest import Server, copy_catalog


def test_admission_by_hand():
    async def scenario():
        waits, rejections = [], []
        admission = Admission(1, 1, waits.append, lambda: rejections.append(1))
        release = asyncio.Event()

        async def work():
            await release.wait()
            return "done"

        first = asyncio.create_task(admission.run(work))
        second = asyncio.create_task(admission.run(work))
        await asyncio.sleep(0.01)
        assert (admission.running, admission.waiting) == (1, 1)
        with pytest.raises(Busy) as refused:  # one running, one waiting: the third is turned away at once
            await admission.run(work)
        assert refused.value.retry_after >= 1 and rejections == [1]
        release.set()
        assert await first == await second == "done"
        assert (admission.running, admission.waiting, admission.admitted) == (0, 0, 0) and len(waits) == 2
        assert await admission.run(work) == "done"  # free again

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, demo_engine):
    catalog = copy_catalog(demo_engine, tmp_path_factory.mktemp("overload") / "catalog")
    running = Server(catalog, {"LOOKALIKE_SEARCH_WORKERS": "1", "LOOKALIKE_SEARCH_QUEUE": "1"})
    yield running
    running.stop()


def test_a_burst_beyond_the_queue_is_refused_at_once_and_the_server_recovers(small_server, stamps):
    rng = np.random.default_rng(5)
    photo = make_phone_photo(load_cutout(stamps[10]), backgrounds()[1], rng)
    outcomes = []
    lock = threading.Lock()

    def one_search():
        with httpx.Client(base_url=small_server.url, timeout=120) as client:
            started = time.perf_counter()
            response = client.post("/api/search", files={"image": ("q.jpg", photo, "image/jpeg")})
            with lock:
                outcomes.append((response, time.perf_counter() - started))

    threads = [threading.Thread(target=one_search) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [seconds for response, seconds in outcomes if response.status_code == 200]
    refused = [(response, seconds) for response, seconds in outcomes if response.status_code == 503]
    assert len(accepted) + len(refused) == 8 and accepted and refused
    for response, _ in refused:
        assert int(response.headers["Retry-After"]) >= 1 and "busy" in response.json()["error"]
    # Refused at once: before the accepted searches, which queue behind each other, are done.
    assert max(seconds for _, seconds in refused) < max(accepted)
    with httpx.Client(base_url=small_server.url, timeout=120) as client:
        assert client.post("/api/search", files={"image": ("q.jpg", photo, "image/jpeg")}).status_code == 200
        metrics = client.get("/metrics").text
    rejections = next(line for line in metrics.splitlines() if line.startswith("lookalike_busy_rejections_total "))
    assert float(rejections.split()[1]) == len(refused)
    assert "lookalike_queue_depth 0.0" in metrics and "lookalike_queue_wait_seconds_count" in metrics
