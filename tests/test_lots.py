"""Lots with several photos: import, migration of one-photo catalogues, lot-level answers, several query photos."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from lookalike import Engine, Item, ItemFilter
from lookalike.demo import backgrounds, load_cutout, make_phone_photo, on_white
from lookalike.store import MIGRATIONS, SCHEMA_VERSION, Catalog
from tests.conftest import REPO, TOKEN, Server, run_cli

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY_SPEC = "python:tests.tiny_encoder:TinyEncoder"


def save(image: Image.Image, path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(path, "JPEG", quality=90)
    return str(path)


@pytest.fixture(scope="module")
def lot_photos(tmp_path_factory, stamps):
    """Twelve lots of the demo's animals, three photos each: on white, turned on white, and a detail."""
    folder = tmp_path_factory.mktemp("lots")
    animals = [stamp for stamp in stamps if stamp.category == "animals"][:12]
    lots = {}
    for stamp in animals:
        cutout = load_cutout(stamp)
        white = on_white(cutout)
        lot = stamp.id.replace("/", "-")
        lots[stamp.id] = [save(white, folder / lot / "0-front.jpg"),
                          save(on_white(cutout.rotate(35, expand=True)), folder / lot / "1-turned.jpg"),
                          save(white.crop((0, 0, white.width // 2, white.height // 2)), folder / lot / "2-detail.jpg")]
    return folder, lots, animals


def write_metadata(path, lots: dict[str, list[str]]) -> None:
    lines = ["id,image,title,category,price,currency"]
    for number, (lot_id, photos) in enumerate(lots.items()):
        lines.append(f"{lot_id},{'|'.join(photos)},Lot {number},animals,{100 + number},EUR")
    path.write_text("\n".join(lines) + "\n")


def test_a_lots_second_photo_finds_the_lot_and_says_which_photo_matched(tmp_path, encoder, lot_photos):
    _, lots, _ = lot_photos
    write_metadata(tmp_path / "lots.csv", lots)
    engine = Engine(tmp_path / "catalog", encoder=encoder)
    report = engine.index_sources([], tmp_path / "lots.csv")
    assert report.embedded == 36 and engine.count() == 12 and engine.info()["vectors"] == 36
    lot_id, photos = next(iter(lots.items()))
    turned = Image.open(photos[1])
    result = engine.search(turned, k=5)
    assert result.hits[0].id == lot_id and result.hits[0].matched_photo == 1 and result.hits[0].photo_count == 3
    assert result.hits[0].image_path == photos[1]
    assert len({hit.id for hit in result.hits}) == len(result.hits) == 5  # each lot once, however many photos matched
    assert engine.check() == []


def test_several_query_photos_are_one_query(tmp_path, encoder, lot_photos, stamps):
    _, lots, animals = lot_photos
    write_metadata(tmp_path / "lots.csv", lots)
    engine = Engine(tmp_path / "catalog", encoder=encoder)
    engine.index_sources([], tmp_path / "lots.csv")
    rng = np.random.default_rng(4)
    stamp = animals[3]
    shots = [make_phone_photo(load_cutout(stamp), backgrounds()[n], rng) for n in range(3)]
    together = engine.search(shots, k=4)
    assert together.hits[0].id == stamp.id and together.hits[0].matched_query in (0, 1, 2)
    assert len({hit.id for hit in together.hits}) == 4 and together.query.count(" + ") == 2
    singles = [engine.search(shot, k=4).hits[0].score for shot in shots]
    assert min(singles) - 1e-6 <= together.hits[0].score <= max(singles) + 1e-6  # the mean of its photos' scores
    estimate = engine.estimate_price(shots, k=5)
    assert len({n.id for n in estimate.neighbours}) == len(estimate.neighbours)  # each lot counted once


def test_photo_changes_reembed_only_what_changed_and_leave_no_vector_behind(tmp_path, tiny_encoder, lot_photos):
    _, lots, _ = lot_photos
    lots = {lot_id: list(photos) for lot_id, photos in list(lots.items())[:4]}
    metadata = tmp_path / "lots.csv"
    write_metadata(metadata, lots)
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    assert engine.index_sources([], metadata).embedded == 12
    again = engine.index_sources([], metadata)
    assert again.embedded == 0 and again.unchanged == 4
    first, second = list(lots)[:2]
    lots[first] = lots[first][:2]  # a photo dropped from the metadata
    lots[second] = [lots[second][2], lots[second][0]]  # reordered, one dropped
    write_metadata(metadata, lots)
    changed = engine.index_sources([], metadata)
    assert changed.embedded == 0 and changed.metadata_updated == 2
    assert [photo.path for photo in engine.get_item(second).photos] == lots[second]
    assert engine.info()["vectors"] == 12 - 1 - 1 and engine.check() == []
    Image.open(lots[first][1]).rotate(90).save(lots[first][1])  # one photo retaken
    assert engine.index_sources([], metadata).embedded == 1
    engine.remove_photo(first, 0)
    assert [photo.path for photo in engine.get_item(first).photos] == [lots[first][1]]
    engine.remove([second])
    assert engine.info()["vectors"] == 1 + 3 + 3 and engine.check() == []
    assert engine.catalog.count_vectors(engine.model_id) == len(engine.index)


@pytest.mark.parametrize("backend", ["exact", "hnsw", "annoy", "hnsw-pca", "milvus"])
def test_no_lot_twice_and_a_lot_scores_its_best_photo_on_every_backend(tmp_path, tiny_encoder, lot_photos, backend):
    _, lots, _ = lot_photos
    options = {"train_size": 16, "components": 8} if backend == "hnsw-pca" else {}
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder, index=backend, index_options=options)
    for lot_id, photos in lots.items():
        engine.add_item(Item(lot_id, category="odd" if len(engine.catalog.keys_matching(ItemFilter())) % 2 else "even",
                             price=float(len(lot_id))), photos)
    vectors = {lot_id: engine.embed(photos) for lot_id, photos in lots.items()}
    for lot_id, photos in list(lots.items())[:4]:
        query = engine.embed([photos[2]])[0]
        hits = engine.search_vector(query, k=6)
        assert len(hits) == 6 and len({hit.id for hit in hits}) == 6
        expected = max(vectors.items(), key=lambda pair: float((pair[1] @ query).max()))[0]
        assert hits[0].id == expected == lot_id and hits[0].matched_photo == 2
        for hit in hits:
            assert hit.score == pytest.approx(float((vectors[hit.id] @ query).max()), abs=1e-4)
        filtered = engine.search_vector(query, k=20, item_filter=ItemFilter(category="even"))
        assert {hit.category for hit in filtered} == {"even"} and len({hit.id for hit in filtered}) == len(filtered) == 6
    engine.close()


def test_folders_as_lots_and_json_lines_with_photo_lists(tmp_path, tiny_encoder, lot_photos):
    folder, lots, _ = lot_photos
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    report = engine.index_sources([folder], lot_per_folder=True)
    assert report.embedded == 36 and engine.count() == 12
    some = sorted(path for path in folder.iterdir())[0]
    assert [photo.path for photo in engine.get_item(some.name).photos] == [str(path) for path in sorted(some.iterdir())]
    lines = [json.dumps({"id": f"json-{n}", "images": photos, "price": 5}) for n, photos in enumerate(lots.values())]
    (tmp_path / "lots.jsonl").write_text("\n".join(lines[:3]) + "\n")
    other = Engine(tmp_path / "other", encoder=tiny_encoder)
    assert other.index_sources([], tmp_path / "lots.jsonl").embedded == 9
    assert other.get_item("json-2").photos[2].path == list(lots.values())[2][2]


def test_a_bad_photo_skips_only_itself_and_a_lot_without_one_is_skipped(tmp_path, tiny_encoder, lot_photos):
    _, lots, _ = lot_photos
    first, second = list(lots.items())[:2]
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    metadata = tmp_path / "lots.csv"
    metadata.write_text(f"id,image\nhalf,{first[1][0]}|{tmp_path / 'broken.jpg'}|{first[1][1]}\n"
                        f"none,{tmp_path / 'broken.jpg'}|{tmp_path / 'missing.jpg'}\nfine,{'|'.join(second[1])}\n")
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    report = engine.index_sources([], metadata)
    problems = [str(problem) for problem in report.problems]
    assert any("broken.jpg" in problem for problem in problems) and any("missing.jpg" in problem for problem in problems)
    assert any(problem.startswith("none: no readable photo") for problem in problems)
    assert [photo.path for photo in engine.get_item("half").photos] == [first[1][0], first[1][1]]
    assert engine.catalog.get("none") is None and engine.count() == 2 and engine.check() == []


def one_photo_catalogue(directory, encoder, photos: dict[str, str]) -> None:
    """A catalogue as lookalike wrote them before lots (schema version 1: one photo, one vector per item)."""
    directory.mkdir(parents=True)
    with sqlite3.connect(directory / "catalog.sqlite") as db:
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute("INSERT INTO meta VALUES('model_id', ?)", (encoder.model_id,))
        for item_id, path in photos.items():
            key = db.execute("INSERT INTO items(id, image_path, category, added_at) VALUES(?,?,'animals','2026-01-01') "
                             "RETURNING key", (item_id, path)).fetchone()[0]
            vector = encoder.embed_arrays(encoder.preprocess(Image.open(path).convert("RGB"))[None])[0]
            db.execute("INSERT INTO vectors VALUES(?,?,?)", (key, encoder.model_id, vector.astype(np.float32).tobytes()))


def test_a_one_photo_catalogue_migrates_in_place_keeping_its_vectors(tmp_path, tiny_encoder, lot_photos):
    _, lots, _ = lot_photos
    photos = {lot_id: paths[0] for lot_id, paths in lots.items()}
    one_photo_catalogue(tmp_path / "old", tiny_encoder, photos)
    with sqlite3.connect(tmp_path / "old" / "catalog.sqlite") as db:
        before = dict(db.execute("SELECT key, vector FROM vectors"))
    catalog = Catalog(tmp_path / "old")
    assert catalog.schema_version == SCHEMA_VERSION == 2
    for item_id, path in photos.items():
        item = catalog.get(item_id)
        assert [photo.path for photo in item.photos] == [path] and item.photos[0].key == item.key
        assert catalog.vector(item.key, tiny_encoder.model_id).tobytes() == before[item.key]  # not re-embedded
    catalog.close()
    engine = Engine(tmp_path / "old", encoder=tiny_encoder)
    assert engine.check() == []
    lot_id = next(iter(photos))
    assert engine.search(photos[lot_id], k=1).hits[0].id == lot_id
    engine.add_photos(lot_id, lots[lot_id][1:])  # the migrated lot takes more photos
    assert engine.get_item(lot_id).photos[2].path == lots[lot_id][2] and engine.check() == []


def test_cli_indexes_lots_and_searches_with_photos_together(tmp_path, lot_photos):
    folder, lots, _ = lot_photos
    catalog = str(tmp_path / "catalog")
    indexed = run_cli("--catalog", catalog, "index", str(folder), "--lot-per-folder", "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    assert "embedded 36 images" in indexed.stdout
    lot_folder = sorted(folder.iterdir())[1]
    shots = [str(path) for path in sorted(lot_folder.iterdir())[1:]]
    together = run_cli("--catalog", catalog, "--query-mode", "single", "search", *shots, "--together", "--json", "-k", "3")
    assert together.returncode == 0, together.stderr
    lines = together.stdout.strip().splitlines()
    assert len(lines) == 1  # one query for one item
    first = json.loads(lines[0])["results"][0]
    assert first["id"] == lot_folder.name and first["photo_count"] == 3 and first["matched_query"] in (0, 1)
    separate = run_cli("--catalog", catalog, "--query-mode", "single", "search", *shots, "--json", "-k", "3")
    assert len(separate.stdout.strip().splitlines()) == 2
    too_many = run_cli("--catalog", catalog, "search", *([shots[0]] * 11), "--together")
    assert too_many.returncode == 2 and "limit of 10" in too_many.stderr and len(too_many.stderr.splitlines()) == 1
    queries = tmp_path / "queries.csv"
    queries.write_text(f"query_image,relevant_ids\n{'|'.join(shots)},{lot_folder.name}\n")
    evaluated = run_cli("--catalog", catalog, "--query-mode", "single", "evaluate", str(queries), "--json")
    assert json.loads(evaluated.stdout)["recall"]["1"] == 1.0


def test_api_lots_several_photos_per_query_and_photo_edits(tmp_path, lot_photos):
    _, lots, _ = lot_photos
    # Loaded by spec, so the catalogue remembers it and the server process loads the same tiny encoder.
    engine = Engine(tmp_path / "catalog", model=TINY_SPEC)
    for lot_id, photos in list(lots.items())[:6]:
        engine.add_item(Item(lot_id, category="animals", price=10.0), photos)
    engine.close()
    server = Server(tmp_path / "catalog", {"LOOKALIKE_API_TOKEN": TOKEN, "PYTHONPATH": str(REPO)})
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            lot_id, photos = list(lots.items())[2]
            files = [("image", (f"{n}.jpg", Path(path).read_bytes(), "image/jpeg")) for n, path in enumerate(photos[1:])]
            body = client.post("/api/search", params={"k": 3}, files=files).json()
            first = body["results"][0]
            assert first["id"] == lot_id and first["photo_count"] == 3 and first["matched_photo"] in (1, 2)
            assert first["thumb_url"].endswith(f"/photos/{first['matched_photo']}?size=thumb")
            assert client.get(first["thumb_url"]).headers["content-type"] == "image/jpeg"
            item = client.get(f"/api/items/{lot_id}").json()
            assert [photo["index"] for photo in item["photos"]] == [0, 1, 2]
            assert client.get(item["photos"][2]["image_url"]).content == Path(photos[2]).read_bytes()
            added = client.post(f"/api/items/{lot_id}/photos", headers=AUTH,
                                files=[("image", ("extra.jpg", Path(list(lots.values())[9][0]).read_bytes()))])
            assert added.status_code == 200 and added.json()["photo_count"] == 4
            assert client.delete(f"/api/items/{lot_id}/photos/0", headers=AUTH).json()["photo_count"] == 3
            assert client.delete(f"/api/items/{lot_id}/photos/7", headers=AUTH).status_code == 404
            assert client.delete(f"/api/items/{lot_id}/photos/0").status_code == 401
            too_many = client.post("/api/search", files=[("image", ("q.jpg", Path(photos[0]).read_bytes()))] * 11)
            assert too_many.status_code == 422 and "limit" in too_many.json()["error"]
    finally:
        server.stop()
    assert Engine(tmp_path / "catalog", model=TINY_SPEC).check() == []
