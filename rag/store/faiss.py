"""FaissStore, the embedded default: exact inner product while small, approximate past `ann_threshold` rows.

Exact search (IndexFlatIP) reads every row per question: 6-8 ms at 100k rows of 384 floats on
this project's 2-core machine, 50-120 ms at 1M. Two approximate indexes were measured against it
(benchmarks/ann.py, benchmarks/ann_quantized.py; results in benchmarks/results/ann-*.md):

- "pq" (the default): a 4-bit fast-scan product quantizer (dim/4 sub-quantizers, 48 bytes a row
  at 384) scanned in full, then the best `candidates` rows rescored exactly against the stored
  floats (faiss "PQ96x4fs,RFlat"). At 1M rows it reached recall@10 0.987 at 4.3 ms p50 on
  uniformly random vectors, the worst case there is (rescoring 12,500 candidates), and 1.000 on
  clustered ones. Its cost grows with n (a full scan of small codes), not with the data's shape.
- "ivf": IndexIVFFlat, nlist = 4*sqrt(n), nprobe 64: recall 0.996 at 1.1 ms at 1M on clustered
  vectors, but 0.1 on random ones (no index that prunes by region finds neighbours that are
  barely nearer than everything else; HNSW M=32 stalled at 0.93 even on clustered data).

"pq" is the default because its recall does not depend on how the vectors are spread. Both keep
the floats in memory (get() and rescoring read them), so memory is that of exact search plus
the codes (46 MB at 1M for "pq").

An approximate index is trained once; the store retrains (rebuilds) it when the row count has
doubled or halved since (measured for IVF at 1M: retraining at 4x instead of 2x cost recall,
0.973 instead of 0.992). "pq" cannot remove rows in place (faiss's IndexRefine has no
remove_ids), so a delete rebuilds it from the kept rows (2.6-5 s at 1M); the index (rag/index/manifest.py)
never deletes from a saved store: its segments are written once and removals are a filter.
Ids are the caller's int64 row ids, kept by an IndexIDMap2 (by the IVF's hash-table direct map
for "ivf").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np

from .base import StoreError

FORMAT_VERSION = 1
INDEX_FILE = "vectors.faiss"
META_FILE = "faiss.json"
IDS_FILE = "ids.npy"
LISTS_PER_SQRT = 4  # nlist = 4 * sqrt(n): the benchmark's setting, faiss's usual 4-16 * sqrt(n)
TRAIN_PER_LIST = 64  # k-means training rows per list (faiss warns below 39; 40 measured 0.968 vs 0.995 at 1M)
REBUILD_FACTOR = 2  # retrain when rows doubled or halved since training
SEED = 1234  # the training sample is drawn reproducibly
ANN_KINDS = ("pq", "ivf")
PQ_TRAIN_ROWS = 65_536  # rows the product quantizer is trained on (16 centroids per sub-quantizer need few)
PQ_MIN_ROWS = 32  # below this a 16-centroid quantizer cannot be trained: stay exact
FILTER_EXACT_ROWS = 50_000  # a filtered search of an approximate store scores up to this many allowed rows exactly
CANDIDATES = 12_500  # rows rescored exactly per query by "pq": 0.987 recall@10 at 1M random rows, 0.981 at 10,000


class FaissStore:
    """Inner-product search over (id, vector) rows held in memory, saved as files.

    Args:
        dim: vector size.
        ann_threshold: above this many rows, search an approximate index instead of every row.
        ann: which approximate index, "pq" (quantized full scan + exact rescoring) or "ivf".
        nprobe: IVF lists searched per query; more is slower and recalls more (see the benchmark).
        candidates: rows "pq" rescores exactly per query; more is slower and recalls more.
    """

    kind = "faiss"
    in_memory = True  # load() reads every row into memory; the files are not read again

    def __init__(self, dim: int, ann_threshold: int = 100_000, ann: str = "pq", nprobe: int = 64, candidates: int = CANDIDATES) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}.")
        if ann_threshold < 0:
            raise ValueError(f"ann_threshold must be 0 or more, got {ann_threshold}.")
        if ann not in ANN_KINDS:
            raise ValueError(f"ann must be one of {', '.join(ANN_KINDS)}, got {ann!r}.")
        if ann == "pq" and dim % 4:
            ann = "ivf"  # the quantizer needs dim/4 whole sub-vectors
        if nprobe < 1 or candidates < 1:
            raise ValueError(f"nprobe and candidates must be at least 1, got {nprobe} and {candidates}.")
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ann = ann
        self.nprobe = nprobe
        self.candidates = candidates
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ids = np.empty(0, dtype=np.int64)  # every stored id, sorted
        self._trained_rows = 0  # rows the IVF was trained at (0 while exact)

    # -- the protocol -----------------------------------------------------------------------

    @property
    def approximate(self) -> bool:
        """True while searches go through the IVF index."""
        return self._trained_rows > 0

    @property
    def nlist(self) -> int:
        """The IVF's number of lists (0 while exact or "pq")."""
        return int(self._index.nlist) if self.approximate and self.ann == "ivf" else 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert rows.

        Raises:
            ValueError: shapes or dtypes do not fit, an id repeats in `ids`, or is already stored.
        """
        ids, vectors = _ids(ids), self._vectors(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors.")
        unique = np.unique(ids)
        if len(unique) != len(ids):
            raise ValueError("ids repeat within one add.")
        taken = unique[np.isin(unique, self._ids, assume_unique=True)]
        if len(taken):
            raise ValueError(f"ids already in the store: {taken[:10].tolist()}")
        if len(ids) == 0:
            return
        self._index.add_with_ids(vectors, ids)
        # Sorted insert, one copy; np.union1d re-sorts everything (3.5 s at 1M rows, measured).
        self._ids = np.insert(self._ids, np.searchsorted(self._ids, unique), unique)
        self._maybe_rebuild()

    def delete(self, ids: np.ndarray) -> int:
        present = np.unique(_ids(ids))
        present = present[np.isin(present, self._ids, assume_unique=True)]
        if len(present) == 0:
            return 0
        if self.approximate and self.ann == "pq":  # IndexRefine cannot remove: rebuild from the kept rows
            ids_all, vectors = self._rows()
            keep = ~np.isin(ids_all, present)
            self._build(ids_all[keep], vectors[keep])
            removed = len(present)
        elif self.approximate:  # the IVF's hash-table direct map removes only by an explicit id list
            removed = self._index.remove_ids(faiss.IDSelectorArray(present))
        else:
            removed = self._index.remove_ids(present)
        if removed != len(present):
            raise StoreError(f"faiss store: removed {removed} of {len(present)} ids; the index is inconsistent, rebuild it")
        self._ids = np.delete(self._ids, np.searchsorted(self._ids, present))
        self._maybe_rebuild()
        return len(present)

    def search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query; with `allowed`, among those rows only (see `_search_allowed`)."""
        vectors = self._vectors(vectors)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        k = int(k)
        if allowed is not None:
            allowed = _ids(allowed)
            allowed = allowed[np.isin(allowed, self._ids)]
        if self.count() == 0 or len(vectors) == 0 or (allowed is not None and len(allowed) == 0):
            return np.full((len(vectors), k), -np.inf, dtype=np.float32), np.full((len(vectors), k), -1, dtype=np.int64)
        if allowed is not None and len(allowed) < self.count():
            return self._search_allowed(vectors, k, allowed)
        params = None
        if self.approximate and self.ann == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        elif self.approximate:
            params = faiss.IndexRefineSearchParameters(k_factor=max(1.0, self.candidates / k))
        scores, ids = self._index.search(vectors, k, params=params)
        scores[ids < 0] = -np.inf  # faiss pads with -FLT_MAX
        return scores, ids

    def _search_allowed(self, vectors: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top k among `allowed` rows (a user's collections), chosen inside the search.

        Exact stores scan every row through an id selector (faiss IDSelectorBatch: 1.1 ms at
        100k rows keeping 2,000, measured). An approximate store would miss a small collection's
        rows outside the lists or candidates it looks at, so up to FILTER_EXACT_ROWS allowed rows
        are read back (reconstruct_batch: 1.4-10 ms for 2,000, 22-65 ms for 50,000) and scored
        exactly; past that, the IVF takes the selector and "pq" (whose fast-scan codes take no
        selector) widens its candidates by the share of rows the filter drops.
        """
        n = len(allowed)
        if not self.approximate:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        elif n <= FILTER_EXACT_ROWS:
            rows = self._index.reconstruct_batch(allowed)
            scores = vectors @ rows.T
            take = min(k, n)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :take]
            top_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
            top_ids = allowed[order]
            if take < k:
                top_scores = np.pad(top_scores, ((0, 0), (0, k - take)), constant_values=-np.inf)
                top_ids = np.pad(top_ids, ((0, 0), (0, k - take)), constant_values=-1)
            return top_scores, top_ids
        elif self.ann == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=faiss.IDSelectorBatch(allowed))
        else:
            wide = min(self.count(), math.ceil(k * self.count() / n) * 2)
            scores, ids = self.search(vectors, wide)
            keep = np.isin(ids, allowed)
            scores, ids = np.where(keep, scores, -np.inf), np.where(keep, ids, -1)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
        scores, ids = self._index.search(vectors, k, params=params)
        scores[ids < 0] = -np.inf
        return scores, ids

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = _ids(ids)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for row, id_ in enumerate(ids.tolist()):
            try:
                out[row] = self._index.reconstruct(id_)
            except RuntimeError:  # faiss: the id is not in the map
                raise KeyError(id_) from None
        return out

    def count(self) -> int:
        return int(self._index.ntotal)

    def save(self, path: Path) -> None:
        """Write vectors.faiss, ids.npy and faiss.json (format, dim, options) under `path`."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            faiss.write_index(self._index, str(path / INDEX_FILE))
            np.save(path / IDS_FILE, self._ids)
            meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "rows": self.count()}
            options = {"ann_threshold": self.ann_threshold, "ann": self.ann, "nprobe": self.nprobe, "candidates": self.candidates}
            meta |= {"trained_rows": self._trained_rows, "options": options}
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
            store._ids = np.load(path / IDS_FILE)
            store._trained_rows = int(meta["trained_rows"])
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise StoreError(f"faiss store: cannot read {path} ({type(err).__name__}: {err}); rebuild the index") from err
        expected = faiss.IndexIVFFlat if store._trained_rows and store.ann == "ivf" else faiss.IndexIDMap2
        if (
            not isinstance(store._index, expected)
            or (store._trained_rows and store.ann == "pq" and not isinstance(faiss.downcast_index(store._index.index), faiss.IndexRefine))
            or store._index.d != dim
            or store.count() != meta.get("rows")
            or len(store._ids) != store.count()
        ):
            raise StoreError(f"faiss store: {path / INDEX_FILE} does not match {META_FILE} (damaged or swapped); rebuild the index")
        return store

    def drop(self) -> None:
        """Forget every row (the memory is freed; saved files are not touched)."""
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._ids = np.empty(0, dtype=np.int64)
        self._trained_rows = 0

    @classmethod
    def discard(cls, path: Path) -> None:
        """Nothing to free: the store is its files."""

    # -- internals ---------------------------------------------------------------------------

    def _maybe_rebuild(self) -> None:
        """Exact -> IVF past the threshold; retrain an IVF once rows moved REBUILD_FACTOR-fold.

        Retraining is a full rebuild of the vectors (about 2 minutes at 1M rows on 2 cores), paid
        by the add or delete that crosses the mark: once per doubling.

        An IVF goes back to exact only by shrinking that far below its training size, so rows
        added and removed around the threshold never retrain it back and forth.
        """
        n = self.count()
        if not self.approximate:
            if n > self.ann_threshold:
                self._rebuild()
        elif not self._trained_rows / REBUILD_FACTOR <= n <= self._trained_rows * REBUILD_FACTOR:
            self._rebuild()

    def _rebuild(self) -> None:
        self._build(*self._rows())

    def _build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """A fresh index of these rows: exact up to ann_threshold rows, else the approximate one trained on them."""
        n = len(ids)
        if n <= self.ann_threshold or n == 0 or (self.ann == "pq" and n < PQ_MIN_ROWS):
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            trained = 0
        elif self.ann == "pq":
            index = faiss.IndexIDMap2(faiss.index_factory(self.dim, f"PQ{self.dim // 4}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT))
            sample = np.random.default_rng(SEED).choice(n, min(n, PQ_TRAIN_ROWS), replace=False)
            index.train(vectors[np.sort(sample)])
            trained = n
        else:
            # Never more lists than training rows allow: a tiny store gets one list (exact).
            nlist = max(1, min(round(LISTS_PER_SQRT * math.sqrt(n)), n // TRAIN_PER_LIST))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(SEED).choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False)
            index.train(vectors[np.sort(sample)])
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            trained = n
        index.add_with_ids(vectors, ids)
        self._index, self._trained_rows = index, trained

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, vector) in the index, read from its storage without a copy per row."""
        if not self.approximate or self.ann == "pq":
            flat = faiss.downcast_index(self._index.index)
            if self.approximate:
                flat = faiss.downcast_index(flat.refine_index)  # the exact floats beside the codes
            return faiss.vector_to_array(self._index.id_map).astype(np.int64), flat.reconstruct_n(0, flat.ntotal)
        lists = self._index.invlists
        ids, vectors = [np.empty(0, dtype=np.int64)], [np.empty((0, self.dim), dtype=np.float32)]
        for number in range(self._index.nlist):
            size = lists.list_size(number)
            if size:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size)
                vectors.append(codes.view(np.float32).reshape(size, self.dim).copy())
        return np.concatenate(ids), np.concatenate(vectors)

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
