"""The VectorStore contract, run against every store in rag.store.STORES (a new store gets these for free)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.store import STORES, StoreError, VectorStore, new_store, open_store

DIM = 8


def unit(rows: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=sorted(STORES))
def store(request) -> VectorStore:
    s = new_store(request.param, DIM)
    s.add(np.arange(100, 110, dtype=np.int64), unit(10))
    return s


def test_it_is_a_vector_store(store):
    assert isinstance(store, VectorStore)
    assert store.kind in STORES and store.dim == DIM and store.count() == 10


def test_search_returns_best_first_by_inner_product(store):
    vectors = unit(10)
    scores, ids = store.search(vectors[3], 4)
    assert ids.shape == (1, 4) and ids[0, 0] == 103
    expected = np.sort(vectors @ vectors[3])[::-1][:4]
    assert np.allclose(scores[0], expected, atol=1e-5)
    assert (np.diff(scores[0]) <= 1e-6).all()


def test_k_larger_than_the_store_returns_what_there_is(store):
    scores, ids = store.search(unit(2, seed=1), 50)
    assert ids.shape[0] == 2 and ids.shape[1] <= 10
    assert set(ids[0][ids[0] >= 0]) <= set(range(100, 110))


def test_get_returns_vectors_in_the_order_asked(store):
    vectors = unit(10)
    assert np.allclose(store.get(np.array([107, 101])), vectors[[7, 1]], atol=1e-6)
    assert store.get(np.array([], dtype=np.int64)).shape == (0, DIM)
    with pytest.raises(KeyError):
        store.get(np.array([999]))


def test_delete_removes_only_known_ids(store):
    assert store.delete(np.array([101, 105, 999])) == 2
    assert store.count() == 8
    _, ids = store.search(unit(10)[1], 10)
    assert 101 not in ids[0] and 105 not in ids[0]


def test_save_then_load_is_the_same_store(store, tmp_path):
    store.save(tmp_path / "s")
    loaded = open_store(store.kind, tmp_path / "s", DIM)
    assert loaded.count() == store.count()
    assert np.allclose(loaded.get(np.arange(100, 110)), store.get(np.arange(100, 110)))
    q = unit(3, seed=2)
    assert (loaded.search(q, 5)[1] == store.search(q, 5)[1]).all()


def test_loading_a_missing_or_other_size_store_is_a_store_error(store, tmp_path):
    with pytest.raises(StoreError):
        open_store(store.kind, tmp_path / "nothing", DIM)
    store.save(tmp_path / "s")
    with pytest.raises(StoreError):
        open_store(store.kind, tmp_path / "s", DIM * 2)


def test_unknown_store_names_the_known_ones():
    with pytest.raises(ValueError, match="choose one of: faiss"):
        new_store("nope", DIM)
