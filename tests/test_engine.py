"""The engine's logic on real photos and real SQLite files, with the tiny encoder
(tests/tiny_encoder.py) wherever the test is not about the model."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from lookalike import Engine, Item, ItemFilter, LookalikeError
from lookalike.demo import load_cutout, on_white
from lookalike.store import ModelMismatchError
from tests.conftest import REPO


@pytest.fixture
def small_catalog(tmp_path, demo_folder, tiny_encoder):
    """A writable catalogue of 60 demo photos in 3 categories."""
    photos = tmp_path / "photos"
    for category in ("food", "vehicles", "household"):
        shutil.copytree(demo_folder / "photos" / category, photos / category)
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    engine.index_sources([photos])
    return engine, photos


def test_ids_and_categories_come_from_the_folder(small_catalog):
    engine, photos = small_catalog
    files = sorted(photos.rglob("*.jpg"))
    assert engine.catalog.count() == len(files)
    for path in files[:: max(1, len(files) // 10)]:
        relative = path.relative_to(photos)
        item = engine.catalog.get(relative.as_posix())
        assert item is not None, relative  # the id is the path below the folder indexed
        assert item.category == relative.parent.as_posix() and item.image_path == str(path)


def test_add_then_search_finds_the_item(small_catalog, stamps):
    engine, _ = small_catalog
    stamp = next(s for s in stamps if s.category == "animals")
    photo = on_white(load_cutout(stamp))
    engine.add_item(Item("new-animal", title=stamp.title, category="animals", price=99.0), photo)
    result = engine.search(photo, k=3)
    assert result.hits[0].id == "new-animal" and result.hits[0].score > 0.99
    assert result.hits[0].price == 99.0 and result.hits[0].category == "animals"


def test_removed_item_is_never_returned(small_catalog):
    engine, photos = small_catalog
    victim = next(iter(engine.catalog.items()))
    assert engine.remove([victim.id]) == [victim.id]
    result = engine.search(victim.image_path, k=engine.catalog.count() + 5)
    assert victim.id not in {hit.id for hit in result.hits}
    assert len(result.hits) == engine.catalog.count()
    assert engine.remove([victim.id]) == []


def test_a_new_process_gives_the_same_results(small_catalog):
    engine, photos = small_catalog
    query = next(photos.rglob("*.jpg"))
    engine.remove([next(iter(engine.catalog.items())).id])
    expected = [(hit.id, round(hit.score, 4)) for hit in engine.search(query, k=5).hits]
    engine.close()
    script = (
        "import sys; from lookalike import Engine; from tests.tiny_encoder import TinyEncoder; "
        "e = Engine(sys.argv[1], encoder=TinyEncoder()); "
        "print([(h.id, round(h.score, 4)) for h in e.search(sys.argv[2], k=5).hits])"
    )
    output = subprocess.run([sys.executable, "-c", script, str(engine.directory), str(query)],
                            capture_output=True, text=True, check=True, cwd=REPO)
    assert output.stdout.strip() == str(expected)


def test_stale_or_missing_index_is_rebuilt_from_the_store(small_catalog, tiny_encoder):
    engine, photos = small_catalog
    query = next(photos.rglob("*.jpg"))
    expected = [hit.id for hit in engine.search(query, k=5).hits]
    engine.close()
    shutil.rmtree(engine.directory / "index")
    reopened = Engine(engine.directory, encoder=tiny_encoder)
    assert [hit.id for hit in reopened.search(query, k=5).hits] == expected
    assert reopened.check() == []


def test_metadata_filters_return_only_matching_items_and_k_of_them(small_catalog):
    engine, photos = small_catalog
    query = next((photos / "vehicles").rglob("*.jpg"))
    food = engine.search(query, k=5, item_filter=ItemFilter(category="food/fruit"))
    assert len(food.hits) == 5 and all(hit.category == "food/fruit" for hit in food.hits)
    every_fruit = engine.catalog.keys_matching(ItemFilter(category="food/fruit"))
    many = engine.search(query, k=1000, item_filter=ItemFilter(category="food/fruit"))
    assert len(many.hits) == len(every_fruit)
    nothing = engine.search(query, k=5, item_filter=ItemFilter(category="no-such-category"))
    assert nothing.hits == []


def test_price_filter_on_search(tmp_path, tiny_encoder, demo_folder):
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    engine.index_sources([], demo_folder / "metadata.csv")
    query = next((demo_folder / "photos" / "animals").rglob("*.jpg"))
    result = engine.search(query, k=20, item_filter=ItemFilter(min_price=100, max_price=200))
    assert len(result.hits) == 20 and all(100 <= hit.price <= 200 for hit in result.hits)


def test_corrupt_and_non_image_files_are_skipped_and_reported(tmp_path, tiny_encoder, demo_folder):
    folder = tmp_path / "photos"
    shutil.copytree(demo_folder / "photos" / "clothes", folder)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "truncated.jpg").write_bytes(next(folder.rglob("*.jpg")).read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    report = engine.index_sources([folder])
    skipped = {problem.where.rsplit("/", 1)[-1] for problem in report.problems}
    assert skipped == {"notes.txt", "truncated.jpg", "empty.png"}
    assert report.embedded == len(list(folder.rglob("*.jpg"))) - 1


def test_reindexing_an_unchanged_folder_embeds_nothing(small_catalog):
    engine, photos = small_catalog
    again = engine.index_sources([photos])
    assert again.embedded == 0 and again.unchanged == engine.catalog.count()
    changed = next(photos.rglob("*.jpg"))
    changed.write_bytes(next((photos / "vehicles").rglob("*.jpg")).read_bytes())
    (photos / "food" / "copy.jpg").write_bytes(changed.read_bytes())
    third = engine.index_sources([photos])
    assert third.embedded == 2


def test_metadata_changes_without_reembedding(tmp_path, tiny_encoder, demo_folder):
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder)
    metadata = demo_folder / "metadata.csv"
    lines = metadata.read_text().splitlines()
    subset = tmp_path / "subset.csv"
    subset.write_text("\n".join(lines[:6]).replace("photos/", str(demo_folder / "photos") + "/") + "\n")
    assert engine.index_sources([], subset).embedded == 5
    subset.write_text(subset.read_text().replace(",EUR,", ",USD,"))
    report = engine.index_sources([], subset)
    assert report.embedded == 0 and report.metadata_updated == 5
    assert {item.currency for item in engine.catalog.items()} == {"USD"}


def test_search_by_id_excludes_the_item_itself(demo_engine):
    item = next(iter(demo_engine.catalog.items()))
    result = demo_engine.search_by_id(item.id, k=5)
    assert len(result.hits) == 5 and item.id not in {hit.id for hit in result.hits}
    with pytest.raises(LookalikeError, match="no item"):
        demo_engine.search_by_id("no-such-id")


def test_another_model_is_refused_with_a_clear_message(small_catalog):
    engine, photos = small_catalog
    engine.close()
    other = Engine(engine.directory, model="efficientnet-lite0:gem")
    with pytest.raises(ModelMismatchError, match="reindex"):
        other.search(next(photos.rglob("*.jpg")))


def test_reindex_switches_model(small_catalog):
    engine, photos = small_catalog
    engine.close()
    switched = Engine(engine.directory, model="efficientnet-lite0:gem")
    report = switched.reindex()
    assert report.embedded == switched.catalog.count() and not report.problems
    assert switched.catalog.model_id.startswith("efficientnet-lite0:gem")
    assert switched.check() == []
    query = next(photos.rglob("*.jpg"))
    assert switched.search(query, k=1).hits[0].score > 0.95
    assert np.isclose(np.linalg.norm(switched.embed([query])[0]), 1.0)


@pytest.mark.parametrize("backend", ["exact", "hnsw", "annoy", "hnsw-pca", "milvus"])
def test_adds_and_deletes_while_searching(tmp_path, tiny_encoder, demo_folder, backend):
    import threading

    photos = sorted((demo_folder / "photos" / "town").rglob("*.jpg"))[:24]
    # hnsw-pca learns its projection once 16 items exist, so the test crosses that point while searching.
    options = {"train_size": 16, "components": 8} if backend == "hnsw-pca" else {}
    engine = Engine(tmp_path / "catalog", encoder=tiny_encoder, index=backend, index_options=options)
    vectors = engine.embed(photos)
    engine.add_vectors([Item(f"base-{n}") for n in range(12)], vectors[:12])
    failures, stop = [], threading.Event()

    def writer():
        try:
            for round_number in range(15):
                engine.add_vectors([Item(f"churn-{round_number}-{n}") for n in range(12)], vectors[12:])
                engine.remove([f"churn-{round_number}-{n}" for n in range(12)])
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            failures.append(repr(error))
        finally:
            stop.set()

    def reader():
        while not stop.is_set():
            try:
                hits = engine.search_vector(vectors[3], k=5)
                scores = [hit.score for hit in hits]
                assert len(hits) == 5 and scores == sorted(scores, reverse=True)
                assert hits[0].id in ("base-3",) or hits[0].id.startswith("churn-")
            except Exception as error:  # noqa: BLE001
                failures.append(repr(error))
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert engine.catalog.count() == 12 and len(engine.index) == 12 and engine.check() == []
    engine.close()
    reopened = Engine(tmp_path / "catalog", encoder=tiny_encoder, index=backend, index_options=options)
    assert [hit.id for hit in reopened.search_vector(vectors[3], k=3)][0] == "base-3"
