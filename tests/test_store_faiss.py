"""FaissStore beyond the shared contract: the switch to approximate search, its recall, its files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.store import StoreError, open_store
from rag.store.faiss import FaissStore

DIM = 32


def clustered(n: int, seed: int = 0, topics: int = 40) -> np.ndarray:
    """Unit vectors around a few topic centres: real embeddings cluster, random ones do not."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, DIM)).astype(np.float32)
    x = centres[rng.integers(topics, size=n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(store: FaissStore, data: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    truth = ids[np.argsort(-(queries @ data.T), axis=1)[:, :10]]
    _, found = store.search(queries, 10)
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())]))


@pytest.mark.parametrize("ann", ["pq", "ivf"])
def test_switches_to_approximate_past_the_threshold_with_high_recall(ann):
    data = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 7 + 3  # ids unrelated to row order
    store = FaissStore(DIM, ann_threshold=1000, ann=ann)
    store.add(ids[:1000], data[:1000])
    assert not store.approximate, "at the threshold: still exact"
    store.add(ids[1000:], data[1000:])
    assert store.approximate and store.count() == 3000
    queries = clustered(200, seed=1)
    assert recall_at_10(store, data, ids, queries) >= 0.98
    _, top = store.search(data[:300], 1)
    assert (top[:, 0] == ids[:300]).mean() >= 0.99
    np.testing.assert_allclose(store.get(ids[[5, 2999]]), data[[5, 2999]], atol=1e-6)


@pytest.mark.parametrize("ann", ["pq", "ivf"])
def test_approximate_store_deletes_and_re_adds(ann):
    data = clustered(2000)
    ids = np.arange(2000, dtype=np.int64)
    store = FaissStore(DIM, ann_threshold=500, ann=ann)
    store.add(ids, data)
    gone = ids[::4]
    assert store.delete(np.concatenate([gone, [10**9]])) == 500
    assert store.count() == 1500 and store.approximate
    _, found = store.search(data[:100], 20)
    assert not np.isin(found, gone).any()
    with pytest.raises(KeyError):
        store.get(gone[:1])
    store.add(gone[:3], data[gone[:3]])
    assert store.count() == 1503
    _, top = store.search(data[gone[:3]], 1)
    assert top[:, 0].tolist() == gone[:3].tolist()
    keep = np.setdiff1d(ids, gone[3:])
    assert recall_at_10(store, data[keep], keep, clustered(100, seed=2)) >= 0.98


@pytest.mark.parametrize("ann", ["pq", "ivf"])
def test_approximate_store_round_trips_through_files(tmp_path, ann):
    data = clustered(1500)
    store = FaissStore(DIM, ann_threshold=1000, ann=ann)
    store.add(np.arange(1500), data)
    store.delete(np.arange(10))
    queries = clustered(20, seed=3)
    before = store.search(queries, 10)
    store.save(tmp_path)
    loaded = open_store("faiss", tmp_path, DIM)
    assert loaded.approximate and loaded.count() == 1490 and loaded.ann_threshold == 1000 and loaded.ann == ann
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    with pytest.raises(KeyError):
        loaded.get(np.array([3]))


def test_damaged_or_mismatched_files_are_a_store_error(tmp_path):
    store = FaissStore(DIM)
    store.add(np.arange(10), clustered(10))
    store.save(tmp_path)
    data = (tmp_path / "vectors.faiss").read_bytes()
    (tmp_path / "vectors.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="cannot read .*rebuild the index"):
        FaissStore.load(tmp_path, DIM)
    store.save(tmp_path)
    meta = json.loads((tmp_path / "faiss.json").read_text())
    (tmp_path / "faiss.json").write_text(json.dumps(meta | {"rows": 11}))
    with pytest.raises(StoreError, match="does not match"):
        FaissStore.load(tmp_path, DIM)
    (tmp_path / "faiss.json").write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(StoreError, match="format 99"):
        FaissStore.load(tmp_path, DIM)


def test_ivf_is_retrained_as_it_grows_and_shrinks():
    data = clustered(8000)
    store = FaissStore(DIM, ann_threshold=100, ann="ivf")
    store.add(np.arange(200), data[:200])
    assert store.approximate and store.nlist == 3  # min(4*sqrt(200), 200 // 64)
    store.add(np.arange(200, 400), data[200:400])
    assert store.nlist == 3, "within 2x of the training size: no retraining"
    store.add(np.arange(400, 8000), data[400:])
    assert store.nlist == 125  # min(4*sqrt(8000) = 358, 8000 // 64)
    assert recall_at_10(store, data, np.arange(8000), clustered(100, seed=4)) >= 0.98
    store.delete(np.arange(50, 8000))
    assert not store.approximate and store.count() == 50, "halved, and under the threshold: exact again"
    _, top = store.search(data[:50], 1)
    assert top[:, 0].tolist() == list(range(50))


def test_pq_finds_neighbours_of_random_vectors_that_ivf_misses():
    """The reason "pq" is the default: on vectors with no clusters, where every neighbour is
    barely nearer than the rest, rescoring a quantized full scan still finds the top 10."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((20_000, DIM)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = rng.standard_normal((100, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = np.arange(20_000, dtype=np.int64)
    recall = {}
    for ann in ("pq", "ivf"):
        store = FaissStore(DIM, ann_threshold=1000, ann=ann, candidates=2_000)
        store.add(ids, data)
        recall[ann] = recall_at_10(store, data, ids, queries)
    assert recall["pq"] >= 0.98 and recall["ivf"] < recall["pq"], recall


@pytest.mark.parametrize("options", [{"ann_threshold": -1}, {"nprobe": 0}, {"dim": 0}, {"ann": "hnsw"}, {"candidates": 0}])
def test_bad_options_fail_at_construction(options):
    with pytest.raises(ValueError):
        FaissStore(**({"dim": DIM} | options))
