"""The VectorStore contract, run for real against every store in STORES (FAISS exact and IVF,
Milvus Lite in-process, and two Milvus servers in their own processes reached by an http URI:
milvus-lite's gRPC server and a real Milvus 2.3.5 standalone).

Defined here where the protocol leaves a choice:
  - padding: a search for more rows than stored pads with id -1 and score -inf;
  - duplicates: adding an id that is stored (or twice in one call) raises ValueError and changes nothing;
  - an id can be added again after it was deleted.
"""

from __future__ import annotations

import numpy as np
import pytest

from rag.store import STORES, StoreError, VectorStore, new_store, open_store

DIM = 16

# Every registered store, plus FAISS forced onto its two approximate paths (ann_threshold=0) and Milvus on a
# server: milvus-lite's ("server": the milvus_server fixture's URI) and a real Milvus standalone
# ("standalone": the milvus_standalone fixture's).
VARIANTS = [pytest.param((kind, {}), id=kind) for kind in sorted(STORES)] + [
    pytest.param(("faiss", {"ann_threshold": 0, "ann": "pq"}), id="faiss-pq"),
    pytest.param(("faiss", {"ann_threshold": 0, "ann": "ivf"}), id="faiss-ivf"),
    pytest.param(("milvus", {"uri": "server"}), id="milvus-server"),
    pytest.param(("milvus", {"uri": "standalone"}), id="milvus-standalone", marks=pytest.mark.slow),  # ~4 s a test
]


def unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=VARIANTS)
def make(request):
    """make() -> an empty store of this variant; stores are closed after the test."""
    kind, options = request.param
    if options.get("uri") in ("server", "standalone"):
        options = {**options, "uri": request.getfixturevalue(f"milvus_{options['uri']}")}
    made = []

    def factory(dim: int = DIM) -> VectorStore:
        store = new_store(kind, dim, **options)
        made.append(store)
        return store

    factory.kind = kind
    yield factory
    for store in made:
        if options.get("uri"):  # a server keeps a collection after its client is gone
            try:
                store.drop()
            except Exception:  # a test that dropped it already
                pass
        if hasattr(store, "close"):
            store.close()


@pytest.fixture
def filled(make):
    """A store with ids 100..149 holding unit(50)."""
    store = make()
    store.add(np.arange(100, 150, dtype=np.int64), unit(50))
    return store


def test_is_a_vector_store(make):
    store = make()
    assert isinstance(store, VectorStore)
    assert store.kind == make.kind and store.dim == DIM and store.count() == 0


def test_search_finds_each_vector_first_with_inner_product_scores(filled):
    data = unit(50)
    scores, ids = filled.search(data, 5)
    assert scores.shape == ids.shape == (50, 5) and scores.dtype == np.float32 and ids.dtype == np.int64
    assert (ids[:, 0] == np.arange(100, 150)).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    expected = np.einsum("qd,qkd->qk", data, data[ids - 100])  # the inner products of what came back
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "best first"


def test_search_is_exact_top_k_on_a_small_store(filled):
    queries = unit(20, seed=1)
    scores, ids = filled.search(queries, 10)
    truth = np.argsort(-(queries @ unit(50).T), axis=1)[:, :10] + 100
    assert (np.sort(ids, axis=1) == np.sort(truth, axis=1)).mean() == 1.0


def test_delete_then_search_get_and_count(filled):
    gone = np.arange(100, 110, dtype=np.int64)
    assert filled.delete(np.concatenate([gone, [7, 99_999]])) == 10, "unknown ids are ignored"
    assert filled.count() == 40
    _, ids = filled.search(unit(50), 40)
    assert not np.isin(ids, gone).any()
    assert (ids[10:, 0] == np.arange(110, 150)).all()
    with pytest.raises(KeyError):
        filled.get(gone[:1])
    assert filled.delete(gone) == 0, "deleting twice removes nothing"
    assert filled.count() == 40


def test_get_returns_vectors_in_the_order_asked(filled):
    data = unit(50)
    np.testing.assert_allclose(filled.get(np.array([105, 102, 149, 105])), data[[5, 2, 49, 5]], atol=1e-6)
    assert filled.get(np.array([], dtype=np.int64)).shape == (0, DIM)
    with pytest.raises(KeyError):
        filled.get(np.array([101, 12345]))


def test_save_then_load_round_trip(filled, tmp_path, make):
    queries = unit(5, seed=2)
    before = filled.search(queries, 7)
    filled.save(tmp_path / "store")
    if hasattr(filled, "close"):
        filled.close()
    loaded = open_store(make.kind, tmp_path / "store", DIM)
    try:
        assert loaded.count() == 50 and loaded.kind == make.kind
        after = loaded.search(queries, 7)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_allclose(after[0], before[0], atol=1e-6)
        np.testing.assert_allclose(loaded.get(np.array([120])), unit(50)[[20]], atol=1e-6)
        loaded.add(np.array([500]), unit(1, seed=3))  # a loaded store is writable
        assert loaded.count() == 51
    finally:
        if hasattr(loaded, "close"):
            loaded.close()


def test_load_refuses_wrong_size_and_missing_files(filled, tmp_path, make):
    filled.save(tmp_path / "store")
    if hasattr(filled, "close"):
        filled.close()
    with pytest.raises(StoreError, match="size 16, expected 32"):
        open_store(make.kind, tmp_path / "store", 32)
    with pytest.raises(StoreError, match="rebuild the index"):
        open_store(make.kind, tmp_path / "nowhere", DIM)


def test_empty_store_search_pads(make):
    scores, ids = make().search(unit(3), 4)
    assert ids.shape == (3, 4) and (ids == -1).all() and np.isneginf(scores).all()


def test_k_over_count_pads_with_minus_one(make):
    store = make()
    store.add(np.array([1, 2, 3]), unit(3))
    scores, ids = store.search(unit(3), 5)
    assert (np.sort(ids[:, :3], axis=1) == [1, 2, 3]).all()
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all() and np.isfinite(scores[:, :3]).all()


def test_duplicate_add_raises_and_changes_nothing(filled):
    with pytest.raises(ValueError, match="already in the store: \\[120\\]"):
        filled.add(np.array([500, 120]), unit(2, seed=4))
    with pytest.raises(ValueError, match="repeat"):
        filled.add(np.array([600, 600]), unit(2, seed=4))
    assert filled.count() == 50
    with pytest.raises(KeyError):
        filled.get(np.array([500]))


def test_an_id_can_be_added_again_after_delete(filled):
    filled.delete(np.array([120]))
    new = unit(1, seed=5)
    filled.add(np.array([120]), new)
    assert filled.count() == 50
    np.testing.assert_allclose(filled.get(np.array([120])), new, atol=1e-6)
    _, ids = filled.search(new, 1)
    assert ids[0, 0] == 120
    _, ids = filled.search(unit(50)[20:21], 50)
    assert (ids == 120).sum() == 1, "the old row with that id is gone"


@pytest.mark.parametrize(
    ("ids", "vectors", "k"),
    [
        (np.array([1]), np.zeros((1, DIM + 1), np.float32), 1),
        (np.array([1, 2]), np.zeros((1, DIM), np.float32), 1),
        (np.array([[1]]), np.zeros((1, DIM), np.float32), 1),
        (np.array([1.5]), np.zeros((1, DIM), np.float32), 1),
        (np.array([1]), np.zeros((1, DIM), np.float32), 0),
    ],
)
def test_bad_input_is_a_value_error(make, ids, vectors, k):
    store = make()
    with pytest.raises(ValueError):
        if k == 0:
            store.add(ids, vectors)
            store.search(vectors, k)
        else:
            store.add(ids, vectors)
    assert store.count() == (1 if k == 0 else 0)


def test_unknown_store_names_the_known_ones():
    with pytest.raises(ValueError, match="choose one of: faiss, milvus"):
        new_store("nope", DIM)


def test_search_among_allowed_rows_is_the_exact_top_k_of_those_rows(filled):
    """A filter is applied inside the search: the top k among the allowed rows, even when every
    unfiltered neighbour of the query is outside them."""
    store, vectors = filled, unit(50)
    allowed = np.arange(100, 150, 7, dtype=np.int64)  # 8 of the 50 rows
    query = vectors[1:2]  # row 101, not allowed, is its own best match
    scores, ids = store.search(query, 5, allowed=allowed)
    expected = allowed[np.argsort(-(vectors[allowed - 100] @ query[0]), kind="stable")[:5]]
    assert ids[0].tolist() == expected.tolist()
    np.testing.assert_allclose(scores[0], np.sort(vectors[allowed - 100] @ query[0])[::-1][:5], atol=1e-4)
    scores, ids = store.search(query, 12, allowed=allowed)  # more than allowed: padded
    assert sorted(ids[0][:8].tolist()) == allowed.tolist() and ids[0][8:].tolist() == [-1] * 4
    _, ids = store.search(query, 3, allowed=np.empty(0, dtype=np.int64))
    assert ids[0].tolist() == [-1, -1, -1]
