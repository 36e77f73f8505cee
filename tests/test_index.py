"""Index backends keep the interface's promises; HNSW recall against exact search."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookalike.config import Settings
from lookalike.index import BACKENDS, MISSING_KEY, ExactIndex, HnswIndex, VectorIndex, create_index, load_index

DIM = 32


def unit(rows: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


VARIANTS = {"exact": ("exact", {}), "exact-float16": ("exact", {"dtype": "float16"}), "hnsw": ("hnsw", {}),
            "annoy": ("annoy", {"n_trees": 20}), "hnsw-pca": ("hnsw-pca", {"train_size": 200, "components": 24}),
            "milvus": ("milvus", {}), "milvus-server": ("milvus", {}), "pgvector": ("pgvector", {})}
APPROXIMATE = ["hnsw", "annoy", "hnsw-pca", "milvus", "milvus-server", "pgvector"]
#: The real servers' addresses (Milvus, a fresh PostgreSQL database), set by the fixtures of the tests on them.
SERVERS: dict[str, str] = {}


class Store:
    """Stands in for the catalogue store that a re-ranking backend reads full vectors from."""

    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}

    def __call__(self, keys) -> np.ndarray:
        return np.stack([self.vectors[key] for key in np.asarray(keys).tolist()])


def make(variant: str, dim: int = DIM):
    backend, options = VARIANTS[variant]
    if backend == "hnsw-pca":
        options = {**options, "components": min(options["components"], dim) if dim == DIM else 256}
    if variant == "milvus":
        # Milvus Lite: the embedded Milvus, same client API as a cluster; one database file per index.
        options = {"uri": str(Path(tempfile.mkdtemp(prefix="milvus-")) / "milvus.db")}
    if variant == "milvus-server":  # a real Milvus server (tests/milvus_server.py); one collection per index
        options = {"uri": SERVERS["milvus"], "collection": f"test_{uuid.uuid4().hex[:12]}"}
    if variant == "pgvector":  # a real PostgreSQL server with pgvector (tests/postgres_server.py); one table per index
        options = {"url": SERVERS["postgresql"], "table": f"test_{uuid.uuid4().hex[:12]}"}
    store = Store()
    index = create_index(backend, dim, vector_source=store, **options)
    add = index.add

    def add_and_store(keys, vectors, fields=None):
        store.vectors.update(zip(np.atleast_1d(keys).tolist(), np.atleast_2d(np.asarray(vectors, np.float32))))
        add(keys, vectors, fields)

    index.add = add_and_store
    index.store = store
    return index


def start_server_for(variant: str, request) -> None:
    if variant == "milvus-server":
        SERVERS["milvus"] = request.getfixturevalue("milvus_server").uri
    if variant == "pgvector":
        SERVERS["postgresql"] = request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def servers(milvus_server, postgres_server) -> None:
    """Both real servers, for a test that draws its backend itself."""
    SERVERS["milvus"] = milvus_server.uri
    SERVERS["postgresql"] = postgres_server.create_database(f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=sorted(VARIANTS))
def backend(request) -> str:
    start_server_for(request.param, request)
    return request.param


def test_every_backend_is_covered_and_implements_the_whole_contract():
    assert {backend for backend, _ in VARIANTS.values()} == set(BACKENDS)
    for name, cls in BACKENDS.items():
        assert issubclass(cls, VectorIndex) and not cls.__abstractmethods__, name
        assert cls.backend == name


def test_auto_chooses_by_the_number_of_photo_vectors():
    from lookalike.index import AUTO_EXACT_LIMIT, AUTO_HNSW_LIMIT, choose_backend

    assert choose_backend("auto", AUTO_EXACT_LIMIT) == "exact"
    assert choose_backend("auto", AUTO_EXACT_LIMIT + 1) == "hnsw"
    assert choose_backend("auto", 5_000_000) == "hnsw-pca" and AUTO_HNSW_LIMIT < 5_000_000  # a million lots x 5 photos
    assert choose_backend("annoy", 5_000_000) == "annoy"
    with pytest.raises(ValueError, match="unknown index backend"):
        choose_backend("faiss", 10)


def test_excluded_keys_are_left_out_and_k_still_comes_back(backend):
    index = make(backend)
    vectors = unit(300)
    index.add(np.arange(300), vectors)
    queries = unit(5, seed=3)
    exact = ExactIndex(DIM)
    exact.add(np.arange(300), vectors)
    for query in queries:
        nearest = exact.search(query[None], 8)[0][0]
        excluded = nearest[:4]
        keys, scores = index.search(query[None], 5, exclude_keys=excluded)
        assert not set(keys[0].tolist()) & set(excluded.tolist()) and (keys[0] != MISSING_KEY).all()
        expected = exact.search(query[None], 5, allowed=np.setdiff1d(np.arange(300), excluded))[0][0]
        if backend.startswith("exact"):  # recall of the approximate ones is measured on real features below
            assert set(keys[0].tolist()) == set(expected.tolist())
        assert (np.diff(scores[0]) <= 1e-6).all()
    allowed = np.arange(0, 300, 3)
    keys, _ = index.search(queries[:1], 200, allowed=allowed, exclude_keys=allowed[:10])
    found = keys[0][keys[0] != MISSING_KEY]
    assert set(found.tolist()) == set(allowed[10:].tolist())


def test_conditions_are_for_backends_with_native_filters_only(backend):
    from lookalike.store import ItemFilter

    index = make(backend)
    vectors = unit(60)
    fields = [{"category": "even" if key % 2 == 0 else "odd", "price": float(key)} for key in range(60)]
    index.add(np.arange(60), vectors, fields)
    wanted = ItemFilter(category="even", min_price=10, max_price=40)
    if not index.native_filters:
        with pytest.raises(ValueError, match="allowed keys"):
            index.search(vectors[:1], 5, conditions=wanted)
        return
    keys, _ = index.search(vectors[:1], 60, conditions=wanted, exclude_keys=[12])
    found = set(keys[0][keys[0] != MISSING_KEY].tolist())
    assert found == {key for key in range(10, 41, 2)} - {12}


def test_finds_itself_first(backend):
    index = make(backend)
    vectors = unit(500)
    index.add(np.arange(500) * 7, vectors)
    keys, scores = index.search(vectors[:20], 3)
    assert (keys[:, 0] == np.arange(20) * 7).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-3)  # float16 rounds


def test_removed_keys_are_never_returned_and_can_come_back(backend):
    index = make(backend)
    vectors = unit(300)
    index.add(np.arange(300), vectors)
    index.remove(np.arange(0, 300, 2))
    keys, _ = index.search(vectors, 10)
    assert len(index) == 150
    assert not np.isin(keys, np.arange(0, 300, 2)).any()
    index.add([4], vectors[4:5])
    assert index.search(vectors[4:5], 1)[0][0, 0] == 4


def test_adding_an_existing_key_replaces_its_vector(backend):
    index = make(backend)
    vectors = unit(50)
    index.add(np.arange(50), vectors)
    index.add([3], vectors[10:11])
    assert len(index) == 50
    keys, _ = index.search(vectors[10:11], 2)
    assert set(keys[0]) == {3, 10}


def test_asking_for_more_than_it_holds_pads(backend):
    index = make(backend)
    index.add([1, 2], unit(2))
    keys, scores = index.search(unit(1, seed=5), 5)
    assert list(keys[0, 2:]) == [MISSING_KEY] * 3 and np.isinf(scores[0, 2:]).all()
    empty = make(backend)
    assert (empty.search(unit(1), 3)[0] == MISSING_KEY).all()


def test_save_then_load_gives_identical_results(backend, tmp_path):
    index = make(backend)
    vectors = unit(2000)
    index.add(np.arange(2000), vectors)
    index.remove([5, 6, 7])
    queries = unit(50, seed=9)
    before = index.search(queries, 10)
    index.save(tmp_path / "saved")
    # A server-side index is found again through the settings (the database's URL holds the password).
    settings = Settings(catalog=tmp_path, store=SERVERS["postgresql"]) if backend == "pgvector" else None
    loaded = load_index(tmp_path / "saved", settings=settings, vector_source=index.store)
    after = loaded.search(queries, 10)
    assert type(loaded) is type(index) and len(loaded) == len(index)
    assert (before[0] == after[0]).all() and np.allclose(before[1], after[1])


@pytest.mark.parametrize("variant", APPROXIMATE)
def test_recall_against_exact_on_real_features(demo_vectors, variant, request):
    start_server_for(variant, request)
    keys, vectors = demo_vectors
    exact, approximate = ExactIndex(vectors.shape[1]), make(variant, vectors.shape[1])
    exact.add(keys, vectors)
    approximate.add(keys, vectors)
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), 100, replace=False)] + rng.normal(0, 0.02, (100, vectors.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth, _ = exact.search(queries, 10)
    found, _ = approximate.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall >= 0.95


def test_hnsw_recall_at_larger_scale():
    vectors = unit(20_000, dim=64, seed=3)
    exact, hnsw = ExactIndex(64), HnswIndex(64, ef_search=128)
    exact.add(np.arange(20_000), vectors)
    hnsw.add(np.arange(20_000), vectors)
    queries = vectors[:200] + 0.3 * unit(200, 64, seed=4)
    truth, _ = exact.search(queries, 10)
    found, _ = hnsw.search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]) >= 0.9


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 400),
    k=st.integers(1, 30),
    allowed_share=st.floats(0.0, 1.0),
    backend=st.sampled_from(sorted(VARIANTS)),
    seed=st.integers(0, 10_000),
)
def test_filtered_search_returns_only_allowed_and_as_many_as_exist(servers, rows, k, allowed_share, backend, seed):
    rng = np.random.default_rng(seed)
    keys = rng.choice(100_000, size=rows, replace=False)
    index = make(backend)
    index.add(keys, unit(rows, seed=seed))
    allowed = keys[rng.random(rows) < allowed_share]
    found, scores = index.search(unit(3, seed=seed + 1), k, allowed)
    for row, row_scores in zip(found, scores):
        returned = row[row != MISSING_KEY]
        assert np.isin(returned, allowed).all()
        assert len(returned) == min(k, len(allowed))
        assert len(set(returned.tolist())) == len(returned)
        assert (np.diff(row_scores[: len(returned)]) <= 1e-6).all()


def test_broad_filter_on_a_big_hnsw_index_still_returns_k():
    vectors = unit(15_000, seed=2)
    index, reference = HnswIndex(DIM), ExactIndex(DIM)
    for target in (index, reference):
        target.add(np.arange(15_000) * 2, vectors)
    allowed = np.arange(0, 30_000, 6)  # a third, 5,000 keys: the graph with a filter (a byte per key), not the scan
    assert len(allowed) > index.exact_filter_max_rows and isinstance(index.acceptor(allowed), bytearray)
    queries = unit(20, seed=8)
    found, _ = index.search(queries, 10, allowed)
    assert (found != MISSING_KEY).all() and np.isin(found, allowed).all()
    truth, _ = reference.search(queries, 10, allowed)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())]) >= 0.9


def test_a_loaded_hnsw_index_scans_filters_exactly_after_churn(tmp_path):
    """The filter scan reads the vectors kept beside the graph; a loaded index reads them from hnswlib's file."""
    index, reference = HnswIndex(DIM, capacity=8), ExactIndex(DIM)
    for target in (index, reference):
        target.add(np.arange(3000) * 5, unit(3000, seed=3))
        target.remove(np.arange(0, 3000, 4) * 5)
        target.add(np.arange(7, 3000, 4) * 5, unit(749, seed=4))  # replaced in place
        target.add(np.arange(20_000, 20_400), unit(400, seed=5))  # new keys reuse removed rows
    index.save(tmp_path / "saved")
    loaded = load_index(tmp_path / "saved")
    allowed = np.concatenate([np.arange(1, 3000, 16) * 5, np.arange(20_000, 20_400, 3)])  # scanned: under 500
    queries = unit(20, seed=6)
    expected = reference.search(queries, 10, allowed)
    for searched in (index, loaded):
        found = searched.search(queries, 10, allowed)
        assert (found[0] == expected[0]).all() and np.allclose(found[1], expected[1], atol=1e-5)


def test_a_projected_scan_finds_what_the_full_scan_finds(demo_vectors, tmp_path):
    """Past ``scan_train_size`` vectors a filter of many matches is scanned in a 128-d projection and its shortlist
    re-ranked exactly: the top 10 match the exact answer's, with exact scores, through churn, a refit and a reload."""
    _, real = demo_vectors
    rng = np.random.default_rng(4)

    def like_real(rows: int) -> np.ndarray:
        noisy = real[rng.integers(0, len(real), rows)] + rng.uniform(0.004, 0.04, (rows, 1)) * rng.normal(size=(rows, real.shape[1]))
        return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)

    dim = real.shape[1]
    index, reference = HnswIndex(dim, scan_train_size=1500), ExactIndex(dim)
    vectors = like_real(4000)
    for target in (index, reference):
        target.add(np.arange(2000), vectors[:2000])
    assert index._projection is not None
    first_projection = index._projection
    for target in (index, reference):
        target.add(np.arange(2000, 4000), vectors[2000:])  # doubled: the projection is learned again
        target.remove(np.arange(0, 4000, 5))
    assert index._projection is not first_projection
    allowed = rng.choice(4000, 2500, replace=False)  # more than four shortlists, fewer than the graph takes
    queries = like_real(30)
    expected_keys, expected_scores = reference.search(queries, 10, allowed)
    index.save(tmp_path / "saved")
    loaded = load_index(tmp_path / "saved")
    assert np.array_equal(loaded._projection, index._projection)  # kept, not learned again from what loaded
    for searched in (index, loaded):
        found_keys, found_scores = searched.search(queries, 10, allowed)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found_keys.tolist(), expected_keys.tolist())]) >= 0.98
        exact_scores = np.einsum("qd,qkd->qk", queries, vectors[found_keys])
        assert np.allclose(found_scores, exact_scores, atol=1e-5)


def test_hnsw_with_keys_too_sparse_for_a_row_map_filters_the_same():
    index, reference = HnswIndex(DIM), ExactIndex(DIM)
    keys = np.arange(1, 1001) * 10**12
    for target in (index, reference):
        target.add(keys, unit(1000, seed=9))
        target.remove(keys[::3])
    allowed = np.concatenate([keys[::2], [7, 10**15]])  # with keys the index never held
    queries = unit(10, seed=10)
    assert (index.search(queries, 10, allowed)[0] == reference.search(queries, 10, allowed)[0]).all()


def test_hnsw_keys_removed_and_added_back_in_any_order_stay_consistent(tmp_path):
    """A key added back while its old slot is still a tombstone must not lose itself when that slot is reused."""
    vectors = unit(4, seed=11)
    index = HnswIndex(DIM)
    index.add([7, 5], vectors[:2])
    index.remove([5, 7])
    index.add([5], vectors[2:3])
    index.add([9], vectors[3:4])
    index.remove([5])
    assert index.keys().tolist() == [9] and index.search(vectors[2:3], 3)[0][0].tolist() == [9, MISSING_KEY, MISSING_KEY]
    index.add([5], vectors[2:3])
    index.save(tmp_path / "saved")
    loaded = load_index(tmp_path / "saved")
    for searched in (index, loaded):
        keys, scores = searched.search(vectors[2:3], 1, np.array([5]))
        assert keys[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    loaded.remove([5])
    assert loaded.keys().tolist() == [9]


def test_exact_broad_filter_scans_with_a_mask(monkeypatch):
    from lookalike.index import exact

    monkeypatch.setattr(exact, "SUBSET_GATHER_MAX", 10)
    vectors = unit(3000, seed=6)
    index = ExactIndex(DIM)
    index.add(np.arange(3000), vectors)
    index.remove(np.arange(0, 3000, 5))
    allowed = np.arange(0, 3000, 2)
    found, scores = index.search(vectors[:4], 7, allowed)
    live_allowed = allowed[allowed % 5 != 0]
    truth = np.argsort(-(vectors[:4] @ vectors[live_allowed].T), axis=1)[:, :7]
    assert (found == live_allowed[truth]).all()


def test_exact_deletes_compact_without_changing_results():
    vectors = unit(5000, seed=7)
    index = ExactIndex(DIM)
    index.add(np.arange(5000), vectors)
    index.remove(np.arange(0, 4000))  # over a quarter dead: compacts
    assert len(index) == 1000 and index.table._used == 1000
    found, _ = index.search(vectors[4500:4510], 1)
    assert (found[:, 0] == np.arange(4500, 4510)).all()
    index.add(np.arange(10), vectors[:10])
    assert index.search(vectors[3:4], 1)[0][0, 0] == 3
