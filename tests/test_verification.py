"""Geometric verification of the shortlist: inliers, the same-object verdict, and where two photos agree."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike import Engine, Item
from lookalike.demo import OPENCV_LOCATIONS, backgrounds, load_cutout, make_phone_photo, on_white
from lookalike.engine.verification import same_object
from lookalike.matching import extract, verify
from tests.conftest import hue_turned, run_cli, textured_stamps

OPENCV = next((folder for folder in OPENCV_LOCATIONS if (folder / "box.png").exists()), None)
TINY_SPEC = "python:tests.tiny_encoder:TinyEncoder"


@pytest.fixture(scope="module")
def opencv():
    if OPENCV is None:
        pytest.fail("opencv-doc's photos are missing (make setup installs them)")
    return OPENCV


@pytest.fixture(scope="module")
def colourful_stamp(stamps):
    """A stamp with strong colours and no mirror symmetry, on white, and a phone photo of it."""
    (stamp, cutout), = textured_stamps(stamps, 1)
    phone = make_phone_photo(cutout, backgrounds()[1], np.random.default_rng(3), perspective=0.08)
    return stamp, on_white(cutout), Image.open(io.BytesIO(phone)).convert("RGB")


def test_a_real_second_photo_verifies_and_the_region_outlines_the_object(opencv):
    box, scene = extract(Image.open(opencv / "box.png")), extract(Image.open(opencv / "box_in_scene.png"))
    found = verify(scene, box)
    assert found.inliers >= 20
    # The box lies left of centre in the lower half of box_in_scene.png.
    xs, ys = found.region[:, 0], found.region[:, 1]
    assert 0.1 < xs.min() < xs.max() < 0.65 and 0.35 < ys.min() < ys.max() < 0.85
    assert len(found.pairs) == min(found.inliers, 40)
    assert ((found.pairs >= 0) & (found.pairs <= 1)).all()
    # Each pair's query point lies inside the region the catalogue photo maps to.
    inside = [xs.min() - 0.02 <= x <= xs.max() + 0.02 and ys.min() - 0.02 <= y <= ys.max() + 0.02 for x, y in found.pairs[:, :2]]
    assert all(inside)


def test_a_mirror_image_and_an_unrelated_photo_do_not_verify(opencv):
    scene = extract(Image.open(opencv / "box_in_scene.png"))
    mirrored = extract(ImageOps.mirror(Image.open(opencv / "box.png")))
    unrelated = extract(Image.open(opencv / "graf1.png"))
    assert verify(scene, mirrored).inliers < 10
    assert verify(scene, unrelated).inliers < 10
    assert not same_object(verify(scene, mirrored)) and not same_object(verify(scene, unrelated))


def test_a_colour_variant_matches_in_shape_but_is_not_the_same_object(colourful_stamp):
    _, white, phone = colourful_stamp
    query = extract(phone)
    same, variant = verify(query, extract(white)), verify(query, extract(hue_turned(white)))
    assert same_object(same)
    assert variant.inliers > 0.5 * same.inliers  # grey-level keypoints cannot tell the colours apart ...
    assert variant.colour_difference > 2 * same.colour_difference  # ... their colours can
    assert not same_object(variant)


def test_photos_without_texture_give_no_verdict():
    blank = extract(Image.new("RGB", (300, 200), "white"))
    assert len(blank) == 0
    assert verify(blank, blank).inliers == 0


@pytest.fixture(scope="module")
def lookalike_engine(tmp_path_factory, tiny_encoder, colourful_stamp, stamps):
    stamp, white, phone = colourful_stamp
    folder = tmp_path_factory.mktemp("verify")
    engine = Engine(folder / "catalog", encoder=tiny_encoder)
    photos = {"original": white, "mirror": ImageOps.mirror(white), "colour": hue_turned(white)}
    for other in [s for s in stamps if s.id != stamp.id][:5]:
        photos[other.id.replace("/", "-")] = on_white(load_cutout(other))
    for name, image in photos.items():
        path = folder / f"{name}.jpg"
        image.save(path, quality=92)
        engine.add_item(Item(name, title=name, price=100.0, currency="EUR", sold_at="2025-05-17"), str(path))
    (folder / "phone.jpg").write_bytes(b"")
    phone.save(folder / "phone.jpg", quality=90)
    yield engine, folder
    engine.close()


def test_the_search_verifies_its_best_lots_and_names_the_same_object(lookalike_engine):
    engine, folder = lookalike_engine
    hits = engine.search(folder / "phone.jpg", k=8).hits
    verdicts = {hit.id: hit.same_object for hit in hits}
    assert verdicts["original"] is True
    assert verdicts["mirror"] is False and verdicts["colour"] is False
    assert [hit.id for hit in hits if hit.same_object] == ["original"]
    assert hits[0].id == "original"  # its inliers lift it whatever the tiny encoder's score
    # The ten best are verified whatever k: asked for one result, the lot the points agree with is that one.
    only = engine.search(folder / "phone.jpg", k=1).hits
    assert [hit.id for hit in only] == ["original"] and only[0].same_object
    assert [hit.ranking for hit in hits] == sorted((hit.ranking for hit in hits), reverse=True)
    body = hits[0].to_dict(with_match=True)
    assert body["inliers"] >= 20 and body["sold_at"] == "2025-05-17"
    assert len(body["match"]["pairs"]) > 0 and len(body["match"]["region"]) == 4


def test_verification_can_be_switched_off_and_skips_a_lot_whose_photo_is_gone(lookalike_engine, tmp_path):
    engine, folder = lookalike_engine
    off = Engine(engine.settings.with_(verify_top=0), encoder=engine.encoder)
    try:
        assert all(hit.inliers is None and "inliers" not in hit.to_dict() for hit in off.search(folder / "phone.jpg").hits)
    finally:
        off.close()
    moved = tmp_path / "mirror.jpg"
    (folder / "mirror.jpg").rename(moved)
    try:
        hits = {hit.id: hit for hit in engine.search(folder / "phone.jpg", k=8).hits}
        assert hits["mirror"].inliers is None and hits["original"].same_object
    finally:
        moved.rename(folder / "mirror.jpg")


def test_more_like_this_verifies_against_the_lots_own_photos(lookalike_engine):
    engine, _ = lookalike_engine
    hits = {hit.id: hit for hit in engine.search_by_id("original", k=8).hits}
    assert "original" not in hits
    assert hits["colour"].inliers >= 20 and hits["colour"].same_object is False
    assert hits["mirror"].same_object is False


def test_the_cli_shows_inliers_and_the_same_object(lookalike_engine):
    engine, folder = lookalike_engine
    result = run_cli("--catalog", str(engine.directory), "--model", TINY_SPEC, "search", str(folder / "phone.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    first = body["results"][0]
    assert first["id"] == "original" and first["same_object"] is True and first["inliers"] >= 20
    table = run_cli("--catalog", str(engine.directory), "--model", TINY_SPEC, "search", str(folder / "phone.jpg"))
    assert "SAME OBJECT" in table.stdout.splitlines()[2]
    assert table.stdout.count("SAME OBJECT") == 1
