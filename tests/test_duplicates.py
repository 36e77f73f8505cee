"""Duplicate lots: the same object listed twice is found through the index and verified; lookalikes are not."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike import Engine, Item
from lookalike.demo import on_white, tilt
from tests.conftest import TOKEN, Server, hue_turned, run_cli, textured_stamps


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, encoder, stamps):
    folder = tmp_path_factory.mktemp("duplicates")
    (first, first_cutout), (second, second_cutout), *others = textured_stamps(stamps, 5)
    rng = np.random.default_rng(11)
    photos: dict[str, list[Image.Image]] = {
        "first": [on_white(first_cutout)],
        "first-imported-again": [on_white(first_cutout)],
        "first-mirror": [ImageOps.mirror(on_white(first_cutout))],
        "second": [on_white(second_cutout), on_white(second_cutout.rotate(30, expand=True))],
        # Relisted years later: photographed again, at another angle.
        "second-relisted": [on_white(tilt(second_cutout.convert("RGBA"), 0.1, rng).rotate(-12, expand=True))],
        "second-in-green": [hue_turned(on_white(second_cutout))],
    }
    for stamp, cutout in others:
        photos[stamp.id.replace("/", "-")] = [on_white(cutout)]
    engine = Engine(folder / "catalog", encoder=encoder)
    for lot_id, images in photos.items():
        paths = []
        for number, image in enumerate(images):
            path = folder / f"{lot_id}-{number}.jpg"
            image.convert("RGB").save(path, quality=92)
            paths.append(str(path))
        engine.add_item(Item(lot_id, title=lot_id), paths)
    yield engine
    engine.close()


def test_a_double_import_and_a_relisted_lot_are_grouped_and_lookalikes_are_not(catalogue):
    report = catalogue.duplicates()
    assert [group.ids for group in report.groups] == [["first", "first-imported-again"], ["second", "second-relisted"]]
    assert report.lots == 9
    assert report.verified_pairs < 9 * 8 / 2  # through the index, not all pairs
    double = report.groups[0].pairs[0]
    assert double.identical and double.photos == (0, 0)  # one file's bytes: no keypoints needed
    relisted = report.groups[1].pairs[0]
    assert not relisted.identical and relisted.inliers >= 25 and relisted.score >= 0.75
    assert set(relisted.photos) <= {0, 1}


def test_the_report_is_kept_until_the_catalogue_changes(catalogue, tmp_path):
    first = catalogue.duplicates()
    assert catalogue.duplicates() is first
    Image.new("RGB", (200, 200), "red").save(tmp_path / "red.jpg")
    catalogue.add_item(Item("plain-red"), str(tmp_path / "red.jpg"))
    try:
        again = catalogue.duplicates()
        assert again is not first and again.lots == first.lots + 1
    finally:
        catalogue.remove(["plain-red"])


def test_the_cli_lists_one_json_object_per_group(catalogue):
    result = run_cli("--catalog", str(catalogue.directory), "duplicates", "--json")
    assert result.returncode == 0, result.stderr
    groups = [json.loads(line) for line in result.stdout.splitlines()]
    assert [group["ids"] for group in groups] == [["first", "first-imported-again"], ["second", "second-relisted"]]
    assert all(pair["identical"] or pair["inliers"] >= 25 for group in groups for pair in group["pairs"])
    table = run_cli("--catalog", str(catalogue.directory), "duplicates", "--quiet")
    assert table.stdout.startswith("2 groups of lots showing the same object, among 9 lots")
    bad = run_cli("--catalog", str(catalogue.directory), "duplicates", "--neighbours", "0")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_the_api_lists_duplicates_for_the_token_holder(catalogue, tmp_path):
    catalogue.flush()
    server = Server(catalogue.directory, {"LOOKALIKE_API_TOKEN": TOKEN})
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{server.url}/api/duplicates").status_code == 401
        started = httpx.get(f"{server.url}/api/duplicates", headers=auth)
        assert started.status_code == 202 and started.headers["Retry-After"] == "5"
        assert started.json()["status"] == "running"
        other = httpx.get(f"{server.url}/api/duplicates?neighbours=7", headers=auth)
        assert other.status_code in (200, 503) and ("error" in other.json() or "groups" in other.json())
        deadline = time.monotonic() + 120
        while (response := httpx.get(f"{server.url}/api/duplicates", headers=auth)).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert response.status_code == 200
        assert [group["ids"] for group in response.json()["groups"]] == [["first", "first-imported-again"],
                                                                         ["second", "second-relisted"]]
        assert httpx.get(f"{server.url}/api/duplicates", headers=auth).json() == response.json()  # kept
        bad = httpx.get(f"{server.url}/api/duplicates?min_score=3", headers=auth)
        assert bad.status_code == 422 and "error" in bad.json()
    finally:
        server.stop()
