"""FaissStore, the embedded default: exact inner product while small, HNSW past `ann_threshold` rows.

Exact search (IndexFlatIP) costs one dot product per row per question, so it grows with the
corpus; HNSW visits a few thousand rows whatever the size. benchmarks/ann.py measured both (and
IVF) on 100k and 1M vectors; benchmarks/results/ann-*.md has the table and the reasons for these
defaults.

Both modes keep the caller's int64 ids in an IndexIDMap2, which also returns stored vectors by
id. HNSW cannot remove a node from its graph, so a deleted row becomes a tombstone that searches
skip (a faiss IDSelector); when tombstones pass `max_deleted_share` of the rows, or a deleted id
is added again, the graph is rebuilt from the live rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from .base import StoreError

FORMAT_VERSION = 1
INDEX_FILE = "vectors.faiss"
META_FILE = "faiss.json"
DELETED_FILE = "deleted.npy"


class FaissStore:
    """Inner-product search over (id, vector) rows held in memory, saved as files.

    Args:
        dim: vector size.
        ann_threshold: above this many rows, search with HNSW instead of exactly.
        hnsw_m: HNSW graph degree (links per node).
        ef_construction: HNSW build beam; larger builds slower and finds neighbours better.
        ef_search: HNSW search beam; larger is slower and recalls more (at least k is used).
        max_deleted_share: rebuild the HNSW graph when this share of its nodes are tombstones.
    """

    kind = "faiss"

    def __init__(
        self,
        dim: int,
        ann_threshold: int = 200_000,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 128,
        max_deleted_share: float = 0.1,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}.")
        if ann_threshold < 0 or hnsw_m < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError("ann_threshold must be >= 0, hnsw_m >= 2, ef_construction and ef_search >= 1.")
        if not 0 < max_deleted_share <= 1:
            raise ValueError(f"max_deleted_share must be in (0, 1], got {max_deleted_share}.")
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.max_deleted_share = max_deleted_share
        self._index = self._exact()
        self._deleted = np.empty(0, dtype=np.int64)  # tombstoned ids (HNSW only), sorted

    # -- the protocol -----------------------------------------------------------------------

    @property
    def approximate(self) -> bool:
        """True while searches go through the HNSW graph."""
        return isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSW)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert rows.

        Raises:
            ValueError: shapes or dtypes do not fit, an id repeats in `ids`, or is already stored.
        """
        ids, vectors = _ids(ids), self._vectors(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors.")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids repeat within one add.")
        stored = self._all_ids()
        taken = ids[np.isin(ids, stored)]
        revived = np.intersect1d(taken, self._deleted)
        if len(taken) > len(revived):
            raise ValueError(f"ids already in the store: {np.setdiff1d(taken, revived)[:10].tolist()}")
        if len(ids) == 0:
            return
        if len(revived):
            self._rebuild()  # a tombstone would hide the new row with the same id
        self._index.add_with_ids(vectors, ids)
        if not self.approximate and self.count() > self.ann_threshold:
            self._rebuild()

    def delete(self, ids: np.ndarray) -> int:
        ids = np.unique(_ids(ids))
        if not self.approximate:
            return int(self._index.remove_ids(ids))
        live = np.setdiff1d(ids[np.isin(ids, self._all_ids())], self._deleted)
        self._deleted = np.union1d(self._deleted, live)
        if len(self._deleted) > self.max_deleted_share * self._index.ntotal:
            self._rebuild()
        return len(live)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = self._vectors(vectors)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        k = int(k)
        if self.count() == 0 or len(vectors) == 0:
            return np.full((len(vectors), k), -np.inf, dtype=np.float32), np.full((len(vectors), k), -1, dtype=np.int64)
        params = None
        if self.approximate:
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            if len(self._deleted):
                batch = faiss.IDSelectorBatch(self._deleted)
                skip = faiss.IDSelectorNot(batch)
                params.sel = skip  # faiss keeps raw pointers: `batch` and `skip` must outlive the search
        scores, ids = self._index.search(vectors, k, params=params)
        scores[ids < 0] = -np.inf  # faiss pads with -FLT_MAX
        return scores, ids

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = _ids(ids)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        dead = set(self._deleted.tolist()) if len(self._deleted) else ()
        for row, id_ in enumerate(ids.tolist()):
            if id_ in dead:
                raise KeyError(id_)
            try:
                out[row] = self._index.reconstruct(id_)
            except RuntimeError:  # faiss: "key not found"
                raise KeyError(id_) from None
        return out

    def count(self) -> int:
        return int(self._index.ntotal) - len(self._deleted)

    def save(self, path: Path) -> None:
        """Write vectors.faiss, deleted.npy and faiss.json (format, dim, options) under `path`."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            faiss.write_index(self._index, str(path / INDEX_FILE))
            np.save(path / DELETED_FILE, self._deleted)
            meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "rows": self.count(), "options": self._options()}
            (path / META_FILE).write_text(json.dumps(meta, indent=1))
        except (OSError, RuntimeError) as err:
            raise StoreError(f"faiss store: cannot write {path}: {err}") from err

    @classmethod
    def load(cls, path: Path, dim: int) -> "FaissStore":
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise StoreError(f"faiss store: {path / META_FILE} has format {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}; rebuild the index")
            if meta.get("dim") != dim:
                raise StoreError(f"faiss store: {path} holds vectors of size {meta.get('dim')}, expected {dim}; rebuild the index")
            store = cls(dim, **meta["options"])
            store._index = faiss.read_index(str(path / INDEX_FILE))
            store._deleted = np.load(path / DELETED_FILE)
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise StoreError(f"faiss store: cannot read {path} ({type(err).__name__}: {err}); rebuild the index") from err
        if not isinstance(store._index, faiss.IndexIDMap2) or store._index.d != dim or store.count() != meta.get("rows"):
            raise StoreError(f"faiss store: {path / INDEX_FILE} does not match {META_FILE} (damaged or swapped); rebuild the index")
        return store

    # -- internals ---------------------------------------------------------------------------

    def _options(self) -> dict:
        return {
            "ann_threshold": self.ann_threshold,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "max_deleted_share": self.max_deleted_share,
        }

    def _exact(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _hnsw(self) -> faiss.IndexIDMap2:
        graph = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        return faiss.IndexIDMap2(graph)

    def _all_ids(self) -> np.ndarray:
        """Every id in the faiss index, tombstones included."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def _rebuild(self) -> None:
        """A fresh index of the live rows: exact up to ann_threshold rows, HNSW above it."""
        ids = self._all_ids()
        inner = faiss.downcast_index(self._index.index)
        flat = inner if isinstance(inner, faiss.IndexFlat) else faiss.downcast_index(inner.storage)
        vectors = flat.reconstruct_n(0, flat.ntotal)
        if len(self._deleted):
            live = ~np.isin(ids, self._deleted)
            ids, vectors = ids[live], vectors[live]
        index = self._hnsw() if len(ids) > self.ann_threshold else self._exact()
        index.add_with_ids(vectors, ids)
        self._index, self._deleted = index, np.empty(0, dtype=np.int64)

    def _vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}.")
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-d integer array, got shape {ids.shape} of {ids.dtype}.")
    return np.ascontiguousarray(ids, dtype=np.int64)
