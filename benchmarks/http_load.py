"""HTTP load: N concurrent clients posting phone photos to /api/search for D
seconds against a real `lookalike serve` on the demo catalogue, for the
single-view and the crops query modes in one run.

    .venv/bin/python benchmarks/http_load.py [--clients 4] [--seconds 60]
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


def serve(folder: Path, mode: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "lookalike", "--catalog", str(folder), "--query-mode", mode,
                                "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
                    latencies.append(elapsed)
                    errors[0] += response.status_code != 200

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {"requests": len(latencies), "errors": errors[0], "req/s": f"{len(latencies) / wall:.1f}",
            "p50 ms": f"{np.percentile(latencies, 50):.0f}", "p99 ms": f"{np.percentile(latencies, 99):.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    folder = catalogue()
    photos = [photo for _, photo in phone_photos(50)]
    rows = []
    for port, mode in ((8791, "single"), (8792, "crops-light"), (8793, "crops")):
        process = serve(folder, mode, port)
        try:
            load(f"http://127.0.0.1:{port}", photos[:4], 1, 3)  # warm up
            rows.append({"query mode": mode, "clients": args.clients, "seconds": args.seconds,
                         **load(f"http://127.0.0.1:{port}", photos, args.clients, args.seconds)})
        finally:
            process.terminate()
            process.wait()
    print(f"POST /api/search with 640 px phone photos, demo catalogue (439 items), {os.cpu_count()} cores, "
          "server and clients on the same machine\n")
    print_table(rows, list(rows[0]))
    write_json("http_load", {"rows": rows})


if __name__ == "__main__":
    main()
