"""The vector-store seam: the `VectorStore` protocol every store implements.

Ids are int64 row ids chosen by the Index (stable across updates); vectors are float32 and
L2-normalised, so inner product is cosine. This module never imports a store; the registry
in `rag/store/__init__.py` names them (txtai's `ann/dense/factory.py` is the model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


class StoreError(RuntimeError):
    """A store could not be opened, read or written; the message names the store and the reason."""


@runtime_checkable
class VectorStore(Protocol):
    """Inner-product search over (id, vector) rows."""

    kind: str
    """Registry name, recorded in the index manifest ("faiss", "milvus", ...)."""
    dim: int
    in_memory: bool
    """True if `load` reads every row into this process, so the saved files may be deleted while
    it is in use; False if rows are served from elsewhere (a database, a server) on each call."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert rows; `ids` (n,) int64 must not exist yet, `vectors` (n, dim) float32."""
        ...

    def delete(self, ids: np.ndarray) -> int:
        """Remove rows by id; unknown ids are ignored. Returns how many were removed."""
        ...

    def search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: (scores (q, k) float32, ids (q, k) int64), best first; id -1 pads.

        `allowed` (sorted int64 ids): only these rows are candidates, filtered inside the search
        (the top k among them, not the allowed part of an unfiltered top k); None: every row.
        """
        ...

    def get(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of `ids`, in that order, (n, dim) float32.

        Raises:
            KeyError: an id is not in the store.
        """
        ...

    def count(self) -> int:
        """Number of rows."""
        ...

    def save(self, path: Path) -> None:
        """Write the store under folder `path` (a no-op for a server-backed store, which is durable)."""
        ...

    @classmethod
    def load(cls, path: Path, dim: int) -> "VectorStore":
        """Open a store saved under `path`.

        Raises:
            StoreError: missing or damaged files; the message names them.
        """
        ...

    def drop(self) -> None:
        """Delete every row and whatever holds them (a server's collection): for a store that
        will never be saved or used again."""
        ...

    @classmethod
    def discard(cls, path: Path) -> None:
        """Free what a store saved under `path` holds outside that folder (a server's collection),
        before the folder is deleted; nothing for a store that lives in its files."""
        ...
