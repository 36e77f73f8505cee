"""Distributed embedding with Ray Data on a local Ray instance: the real CLI
indexes a folder of lots (a lot per folder, several photos each) with --ray and
stores the same vectors as the single-process path; bad files are skipped and
reported the same way."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from tests.conftest import run_cli


def stored_vectors(catalog) -> dict[tuple[str, str], np.ndarray]:
    """(lot id, photo path) -> vector."""
    with sqlite3.connect(catalog / "catalog.sqlite") as db:
        rows = db.execute("SELECT items.id, photos.path, photo_vectors.vector FROM items JOIN photos ON photos.item_key = items.key "
                          "JOIN photo_vectors ON photo_vectors.photo_key = photos.key").fetchall()
    return {(item_id, path): np.frombuffer(blob, np.float32) for item_id, path, blob in rows}


@pytest.mark.slow  # about 27 s with Ray start-up; make test-slow (and CI) runs it
def test_ray_indexes_the_same_vectors_as_one_process(tmp_path, demo_folder):
    folder = tmp_path / "photos"
    for path in sorted((demo_folder / "photos" / "food").rglob("*.jpg"))[:40]:
        target = folder / path.relative_to(demo_folder / "photos")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")

    lots = {path.parent.relative_to(folder).as_posix() for path in folder.rglob("*.jpg") if path.name != "broken.jpg"}
    assert len(lots) >= 2
    local = run_cli("--catalog", str(tmp_path / "local"), "index", str(folder), "--lot-per-folder", "--quiet")
    assert local.returncode == 0, local.stderr
    distributed = run_cli("--catalog", str(tmp_path / "ray"), "index", str(folder), "--lot-per-folder", "--quiet", "--ray")
    assert distributed.returncode == 0, distributed.stderr
    assert "embedded 40 images" in distributed.stdout and "1 skipped" in distributed.stdout
    assert "broken.jpg" in distributed.stdout

    single, parallel = stored_vectors(tmp_path / "local"), stored_vectors(tmp_path / "ray")
    assert set(single) == set(parallel) and len(single) == 40 and {lot for lot, _ in single} == lots
    assert max(float(np.abs(single[key] - parallel[key]).max()) for key in single) <= 1e-5

    check = run_cli("--catalog", str(tmp_path / "ray"), "check")
    assert check.returncode == 0, check.stdout
    again = run_cli("--catalog", str(tmp_path / "ray"), "index", str(folder), "--lot-per-folder", "--quiet", "--ray")
    assert "embedded 0 images" in again.stdout and f"{len(lots)} unchanged" in again.stdout
    query = sorted((folder / "food").rglob("*.jpg"))[1]
    found = json.loads(run_cli("--catalog", str(tmp_path / "ray"), "--query-mode", "single", "search", str(query),
                               "--json").stdout)["results"][0]
    assert found["score"] > 0.99 and found["id"] == query.parent.relative_to(folder).as_posix()
    assert found["photo_count"] > 1 and found["image_path"] == str(query)
