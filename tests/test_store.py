"""The catalogue store, on SQLite and on a real PostgreSQL server: schema versions, durability, model
consistency, filters, and a store that is down."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from lookalike.store import SCHEMA_VERSION, Catalog, CatalogError, Item, ItemFilter, ModelMismatchError

MODEL = "test-model:avg:224:p1"


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=8).astype(np.float32)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request) -> str | None:
    """The store argument: None for SQLite in the folder, or a fresh PostgreSQL database."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


def test_new_catalogue_has_current_schema_version(tmp_path):
    catalog = Catalog(tmp_path)
    assert catalog.schema_version == SCHEMA_VERSION
    assert sqlite3.connect(tmp_path / "catalog.sqlite").execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    Catalog(tmp_path).close()
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog(tmp_path)


def test_missing_catalogue_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="no catalogue"):
        Catalog(tmp_path / "nothing", create=False)


def test_items_and_vectors_survive_reopening_in_another_process(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    catalog.upsert([(Item("chair-1", title="Oak chair", category="furniture", price=120.0, extra={"maker": "Thonet"}),
                     vector(1))], MODEL)
    catalog.close()
    script = (
        "import sys; from lookalike.store import Catalog; c = Catalog(sys.argv[1], store=sys.argv[2] or None); "
        "i = c.get('chair-1'); "
        "print(i.title, i.price, i.extra['maker'], c.vector(i.key, c.model_id).sum())"
    )
    output = subprocess.run([sys.executable, "-c", script, str(tmp_path), store or ""], capture_output=True, text=True, check=True)
    assert output.stdout.split()[:4] == ["Oak", "chair", "120.0", "Thonet"]
    assert float(output.stdout.split()[4]) == pytest.approx(float(vector(1).sum()), rel=1e-5)


def test_upsert_updates_in_place_and_remove_deletes_vectors(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    [key] = catalog.upsert([(Item("a", price=1.0), vector(1))], MODEL)
    [same_key] = catalog.upsert([(Item("a", price=2.0), vector(2))], MODEL)
    assert key == same_key and catalog.get("a").price == 2.0
    assert np.allclose(catalog.vector(key, MODEL), vector(2))
    assert [item.id for item in catalog.remove(["a", "never-there"])] == ["a"]
    assert catalog.get("a") is None and catalog.count_vectors(MODEL) == 0


def test_vectors_of_another_model_are_refused(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    catalog.upsert([(Item("a"), vector(1))], MODEL)
    with pytest.raises(ModelMismatchError, match="reindex"):
        catalog.upsert([(Item("b"), vector(2))], "other-model:avg:224:p1")


def test_switching_model_drops_old_vectors(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    [key] = catalog.upsert([(Item("a"), vector(1))], MODEL)
    catalog.replace_vectors([key], vector(3)[None], "new-model")
    assert catalog.count_vectors(MODEL) == 1 and catalog.model_id == MODEL
    catalog.switch_model("new-model")
    assert catalog.model_id == "new-model" and catalog.count_vectors(MODEL) == 0


def test_generation_grows_with_every_change(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    before = catalog.generation
    catalog.upsert([(Item("a"), vector(1))], MODEL)
    catalog.remove(["a"])
    assert catalog.generation == before + 2


def test_filters_select_by_category_price_and_extra_fields(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    catalog.upsert([
        (Item("cheap-chair", category="chair", price=10.0, extra={"maker": "Ikea"}), vector(1)),
        (Item("dear-chair", category="chair", price=900.0, extra={"maker": "Thonet"}), vector(2)),
        (Item("lamp", category="lamp", price=50.0), vector(3)),
        (Item("unpriced-chair", category="chair"), vector(4)),
    ], MODEL)

    def ids(item_filter: ItemFilter) -> set[str]:
        found = catalog.get_many(catalog.keys_matching(item_filter).tolist())
        return {item.id for item in found.values()}

    assert ids(ItemFilter(category="chair")) == {"cheap-chair", "dear-chair", "unpriced-chair"}
    assert ids(ItemFilter(min_price=20)) == {"dear-chair", "lamp"}
    assert ids(ItemFilter(category="chair", max_price=100)) == {"cheap-chair"}
    assert ids(ItemFilter(has_price=True)) == {"cheap-chair", "dear-chair", "lamp"}
    assert ids(ItemFilter(fields=(("maker", "Thonet"),))) == {"dear-chair"}


def test_a_failed_transaction_leaves_nothing_behind(tmp_path, store):
    catalog = Catalog(tmp_path, store=store)
    catalog.upsert([(Item("kept"), vector(1))], MODEL)

    def items_then_failure():
        yield Item("half-written"), vector(2)
        raise RuntimeError("crash in the middle of a batch")

    with pytest.raises(RuntimeError):
        catalog.upsert(items_then_failure(), MODEL)
    assert catalog.get("half-written") is None and catalog.count() == 1
    assert catalog.integrity_problems() == []


def test_postgresql_catalogue_has_the_same_schema_version(tmp_path, postgres_url):
    catalog = Catalog(tmp_path, store=postgres_url)
    assert catalog.schema_version == SCHEMA_VERSION
    catalog.close()
    with pytest.raises(CatalogError, match="no catalogue"):
        Catalog(tmp_path, create=False, store=postgres_url.rsplit("/", 1)[0] + "/postgres")


def test_a_store_that_is_down_is_one_clear_error_without_the_password(tmp_path, postgres_server):
    from lookalike.errors import ErrorKind, LookalikeError
    from tests.postgres_server import PASSWORD

    closed_port = postgres_server.url().replace(f":{postgres_server.port}/", ":9/")
    wrong_password = postgres_server.url().replace(PASSWORD, "not-the-password")
    for url in (closed_port, wrong_password):
        with pytest.raises(LookalikeError) as caught:
            Catalog(tmp_path, store=url)
        assert caught.value.kind == ErrorKind.UNAVAILABLE and "PostgreSQL at postgresql://127.0.0.1:" in str(caught.value)
        assert PASSWORD not in str(caught.value) and "not-the-password" not in str(caught.value)
    with pytest.raises(CatalogError, match="postgresql://"):
        Catalog(tmp_path, store="mysql://somewhere/db")


def test_a_copied_catalogue_keeps_its_keys_and_never_gives_a_removed_one_again(tmp_path, postgres_url):
    source = Catalog(tmp_path / "sqlite")
    keys = source.upsert([(Item(f"lot-{n}", price=float(n), extra={"maker": "Thonet"}), vector(n)) for n in range(5)], MODEL)
    source.remove(["lot-4"])  # the highest key is gone, and still never given again
    for target_store in (postgres_url, None):
        target = Catalog(tmp_path / f"copy-{target_store is None}", store=target_store)
        lots = source.count()
        copied = source.copy_to(target)
        assert copied["items"] == lots and copied["photo_vectors"] == lots
        assert {item.id: (item.key, item.price, item.extra) for item in target.items()} == \
            {item.id: (item.key, item.price, item.extra) for item in source.items()}
        assert np.allclose(target.vector(keys[0], MODEL), vector(0)) and target.generation == source.generation
        [new] = target.upsert([(Item(f"lot-new-{lots}"), vector(9))], MODEL)
        assert new > max(keys)
        keys.append(new)
        with pytest.raises(CatalogError, match="already holds"):
            source.copy_to(target)
        source = target  # then back from PostgreSQL to SQLite
