"""HTTP load: N concurrent clients posting phone photos to /api/search for D
seconds against a real `lookalike serve` on the demo catalogue, for the
single-view and the crops query modes in one run; then 32 clients against the
default mode with the embedding work bounded (the default: a 503 with
Retry-After beyond it) and unbounded (every request queues), side by side.

    .venv/bin/python benchmarks/http_load.py [--clients 4] [--seconds 60] [--overload-clients 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
from common import RESULTS, demo_photo_folder, print_table, write_json
from query_bench import phone_photos

from lookalike.engine import Engine


def catalogue() -> Path:
    folder = RESULTS / "load-catalog"
    if not (folder / "catalog.sqlite").exists():
        with Engine(folder) as engine:
            engine.index_sources([], demo_photo_folder() / "metadata.csv")
    return folder


def serve(folder: Path, mode: str, port: int, env: dict | None = None) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "lookalike", "--catalog", str(folder), "--query-mode", mode,
                                "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})})
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("server did not start")


def load(url: str, photos: list[bytes], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    refused: list[float] = []
    errors = [0]
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=60) as http:
            sent = number
            while time.monotonic() < stop_at:
                photo = photos[sent % len(photos)]
                sent += clients
                started = time.perf_counter()
                response = http.post(url + "/api/search", files={"image": ("q.jpg", photo, "image/jpeg")})
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status_code == 503:
                        refused.append(elapsed)
                    else:
                        latencies.append(elapsed)
                        errors[0] += response.status_code != 200
                if response.status_code == 503:
                    time.sleep(float(response.headers.get("Retry-After", "1")))  # as a polite client does

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    total = len(latencies) + len(refused)
    return {"requests": total, "refused (503)": f"{len(refused) / max(total, 1):.0%}", "other errors": errors[0],
            "answered/s": f"{len(latencies) / wall:.1f}",
            "p50 ms": f"{np.percentile(latencies, 50):.0f}", "p99 ms": f"{np.percentile(latencies, 99):.0f}",
            "refusal p50 ms": f"{np.percentile(refused, 50):.0f}" if refused else "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--overload-clients", type=int, default=32)
    args = parser.parse_args()
    folder = catalogue()
    photos = [photo for _, photo in phone_photos(50)]
    rows = []
    runs = [(8791, "single", args.clients, "bounded (default)", {}),
            (8792, "crops-light", args.clients, "bounded (default)", {}),
            (8793, "crops", args.clients, "bounded (default)", {}),
            (8794, "crops", args.overload_clients, "bounded (default)", {}),
            (8795, "crops", args.overload_clients, "unbounded", {"LOOKALIKE_SEARCH_QUEUE": "100000"})]
    for port, mode, clients, work, env in runs:
        process = serve(folder, mode, port, env)
        try:
            load(f"http://127.0.0.1:{port}", photos[:4], 1, 3)  # warm up
            rows.append({"query mode": mode, "embedding work": work, "clients": clients, "seconds": args.seconds,
                         **load(f"http://127.0.0.1:{port}", photos, clients, args.seconds)})
        finally:
            process.terminate()
            process.wait()
    print(f"POST /api/search with 640 px phone photos, demo catalogue (439 items), {os.cpu_count()} cores, "
          "server and clients on the same machine\n")
    print_table(rows, list(rows[0]))
    write_json("http_load", {"rows": rows})


if __name__ == "__main__":
    main()
