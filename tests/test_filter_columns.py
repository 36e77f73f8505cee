"""Filters answered from the catalogue's in-memory filter columns give exactly what SQL gives, through writes,
removals, metadata edits and another process writing to the same SQLite file."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.store import Catalog, Item, ItemFilter
from lookalike.store import catalog as catalog_module
from lookalike.store.catalog import Photo

MODEL = "test-model:avg:224:p1"
CATEGORIES = ["chairs", "clocks", "Clocks", "vases", "ç", None]
MAKERS = ["Thonet", 1900, 1900.0, "1900", " Thonet", True, None, {"a": 1}]
DATES = ["2021-03-01", "2021-03-01T10:00:00", "2023", "2024-12-31", None]


def sql_answer(catalog: Catalog, item_filter: ItemFilter) -> list[int]:
    """What SQL answers: the photos of the lots ``Catalog.items`` selects with the filter's WHERE clause."""
    return sorted(photo.key for item in catalog.items(item_filter) for photo in item.photos)


def lot(rng: np.random.Generator, number: int) -> tuple[Item, list]:
    extra = {} if rng.random() < 0.2 else {"maker": MAKERS[rng.integers(len(MAKERS))]}
    if rng.random() < 0.5:
        extra["period"] = str(rng.choice(["victorian", "art deco"]))
    price = None if rng.random() < 0.2 else float(np.round(rng.uniform(1, 1000), 2))
    item = Item(f"lot-{number}", category=CATEGORIES[rng.integers(len(CATEGORIES))], price=price,
                sold_at=DATES[rng.integers(len(DATES))], extra=extra)
    photos = [(Photo(f"lot-{number}-{side}.jpg"), rng.normal(size=8).astype(np.float32)) for side in range(rng.integers(0, 4))]
    return item, photos


def filters(rng: np.random.Generator) -> list[ItemFilter]:
    return [ItemFilter(), ItemFilter(category="clocks"), ItemFilter(category="Clocks"), ItemFilter(category="ç"),
            ItemFilter(min_price=200.0), ItemFilter(max_price=float(rng.uniform(1, 1000))), ItemFilter(has_price=True),
            ItemFilter(category="vases", min_price=100.0, max_price=900.0),
            ItemFilter(fields=(("maker", "Thonet"),)), ItemFilter(fields=(("maker", "1900"),)),
            ItemFilter(fields=(("maker", "1900.0"),)), ItemFilter(fields=(("maker", "1"),)),
            ItemFilter(fields=(("maker", '{"a":1}'),)), ItemFilter(fields=(("period", "art deco"), ("maker", "Thonet"))),
            ItemFilter(sold_before="2021-03-01T"), ItemFilter(sold_before="2024"),
            ItemFilter(category="chairs", sold_before="2025", fields=(("period", "victorian"),))]


def assert_same_as_sql(catalog: Catalog, rng: np.random.Generator) -> None:
    for item_filter in filters(rng):
        assert sorted(catalog.photo_keys_matching(item_filter).tolist()) == sql_answer(catalog, item_filter), item_filter


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_columns_agree_with_sql_through_writes_and_removals(tmp_path_factory, seed):
    rng = np.random.default_rng(seed)
    catalog = Catalog(tmp_path_factory.mktemp("columns"))
    catalog.write_lots([lot(rng, number) for number in range(40)], MODEL)
    catalog.read_filter_columns()  # as serve does at its start
    assert catalog._columns is not None
    assert_same_as_sql(catalog, rng)
    for _ in range(6):
        numbers = rng.choice(60, 8, replace=False).tolist()  # new lots and rewrites of existing ones
        catalog.write_lots([lot(rng, number) for number in numbers], MODEL)
        catalog.remove([f"lot-{number}" for number in rng.choice(60, 4, replace=False).tolist()])
        edited = [catalog.get(f"lot-{number}") for number in rng.choice(60, 5).tolist()]
        for item in filter(None, edited):  # metadata only: photos kept
            item.category, item.extra = "clocks", {"maker": "Thonet", "period": "art deco"}
            catalog.write_lots([(item, None)], MODEL)
        catalog.replace_vectors([], np.zeros((0, 8), np.float32), MODEL)  # moves the change counter, no lot
        assert_same_as_sql(catalog, rng)
        assert catalog._columns.generation == catalog.generation  # kept in step, not read afresh
    catalog.close()


def test_another_process_writing_is_seen(tmp_path, monkeypatch):
    """Behind another process's write, SQL answers while the columns are read again in the background."""
    monkeypatch.setattr(catalog_module, "COLUMNS_REREAD_SECONDS", 0.0)
    rng = np.random.default_rng(3)
    catalog = Catalog(tmp_path)
    catalog.write_lots([lot(rng, number) for number in range(20)], MODEL)
    catalog.read_filter_columns()
    clocks = ItemFilter(category="clocks")
    before = catalog.photo_keys_matching(clocks)
    script = (
        "import sys, numpy as np; from lookalike.store import Catalog, Item; from lookalike.store.catalog import Photo; "
        "c = Catalog(sys.argv[1]); c.write_lots([(Item('elsewhere', category='clocks'), "
        "[(Photo('elsewhere.jpg'), np.ones(8, np.float32))])], sys.argv[2]); "
        "c.remove([i.id for i in c.items() if i.category == 'clocks'][:1])"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), MODEL], check=True)
    after = catalog.photo_keys_matching(clocks)  # from SQL: the columns are behind
    assert sorted(after.tolist()) == sql_answer(catalog, clocks) and sorted(after.tolist()) != sorted(before.tolist())
    deadline = time.monotonic() + 30
    while catalog._columns.generation != catalog.generation and time.monotonic() < deadline:
        time.sleep(0.05)
    assert catalog._columns.generation == catalog.generation, "the columns were not read again"
    assert_same_as_sql(catalog, rng)


def test_sparse_keys_are_answered_in_sql(tmp_path):
    catalog = Catalog(tmp_path)
    with catalog.transaction() as db:  # keys far apart, as a copied-in catalogue may have them
        for key in (5, 10**9):
            db.execute("INSERT INTO items(key, id, category, added_at) VALUES(?, ?, 'clocks', '2026')", (key, f"lot-{key}"))
            db.execute("INSERT INTO photos(key, item_key, position) VALUES(?, ?, 0)", (key, key))
    catalog.read_filter_columns()
    assert catalog._columns is None
    assert sorted(catalog.photo_keys_matching(ItemFilter(category="clocks")).tolist()) == [5, 10**9]
