"""Distributed embedding with Ray Data on a local Ray instance: the real CLI
indexes a folder with --ray and stores the same vectors as the single-process
path; bad files are skipped and reported the same way."""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from tests.conftest import run_cli


def stored_vectors(catalog) -> dict[str, np.ndarray]:
    with sqlite3.connect(catalog / "catalog.sqlite") as db:
        rows = db.execute("SELECT items.id, photo_vectors.vector FROM items JOIN photos ON photos.item_key = items.key "
                          "JOIN photo_vectors ON photo_vectors.photo_key = photos.key").fetchall()
    return {item_id: np.frombuffer(blob, np.float32) for item_id, blob in rows}


def test_ray_indexes_the_same_vectors_as_one_process(tmp_path, demo_folder):
    folder = tmp_path / "photos"
    for path in sorted((demo_folder / "photos" / "food").rglob("*.jpg"))[:40]:
        target = folder / path.relative_to(demo_folder / "photos")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")

    local = run_cli("--catalog", str(tmp_path / "local"), "index", str(folder), "--quiet")
    assert local.returncode == 0, local.stderr
    distributed = run_cli("--catalog", str(tmp_path / "ray"), "index", str(folder), "--quiet", "--ray")
    assert distributed.returncode == 0, distributed.stderr
    assert "embedded 40 images" in distributed.stdout and "1 skipped" in distributed.stdout
    assert "broken.jpg" in distributed.stdout

    single, parallel = stored_vectors(tmp_path / "local"), stored_vectors(tmp_path / "ray")
    assert set(single) == set(parallel) and len(single) == 40
    assert max(float(np.abs(single[key] - parallel[key]).max()) for key in single) <= 1e-5

    check = run_cli("--catalog", str(tmp_path / "ray"), "check")
    assert check.returncode == 0, check.stdout
    again = run_cli("--catalog", str(tmp_path / "ray"), "index", str(folder), "--quiet", "--ray")
    assert "embedded 0 images" in again.stdout and "40 unchanged" in again.stdout
    found = json.loads(run_cli("--catalog", str(tmp_path / "ray"), "--query-mode", "single", "search",
                               str(sorted((folder / "food").rglob("*.jpg"))[0]), "--json").stdout)
    assert found["results"][0]["score"] > 0.99
