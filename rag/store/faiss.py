"""The embedded default store: exact inner-product search in FAISS, saved as one file per store."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .base import StoreError

FILE = "vectors.faiss"


class FaissStore:
    """Exact search (`IndexFlatIP`) keyed by our own int64 ids (`IndexIDMap2`, which can also
    return a stored vector by id). Exact is fast enough well past this corpus: a few ms per
    question at 100k rows of 384 floats."""

    kind = "faiss"

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = int(dim)
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), not {vectors.shape}")
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def delete(self, ids: np.ndarray) -> int:
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        k = min(k, self.count())
        if k <= 0:
            return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
        return self._index.search(queries, k)

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            return self._index.reconstruct_batch(ids)
        except RuntimeError as err:  # faiss: "key not found"
            raise KeyError(f"an id of {ids.tolist()[:10]} is not in the store") from err

    def count(self) -> int:
        return int(self._index.ntotal)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path / FILE))

    @classmethod
    def load(cls, path: Path, dim: int) -> "FaissStore":
        file = path / FILE
        if not file.exists():
            raise StoreError(f"faiss store: {file} is missing")
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as err:
            raise StoreError(f"faiss store: {file} is unreadable ({err})") from err
        if index.d != dim:
            raise StoreError(f"faiss store: {file} holds vectors of size {index.d}, not {dim}")
        return cls(dim, index)
