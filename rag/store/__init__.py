"""Vector stores behind one protocol: pick one by name with `open_store` / `new_store`.

Adding a store is one file in this folder plus one line in STORES.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import StoreError, VectorStore

__all__ = ["STORES", "StoreError", "VectorStore", "new_store", "open_store", "store_class"]

# name -> "module:Class", imported only when chosen.
STORES: dict[str, str] = {
    "faiss": "rag.store.faiss:FaissStore",
    "milvus": "rag.store.milvus:MilvusStore",
}


def store_class(kind: str) -> type:
    """The class registered as `kind`.

    Raises:
        ValueError: no store has that name; the message lists the known ones.
    """
    target = STORES.get(kind)
    if target is None:
        raise ValueError(f"Unknown vector store {kind!r}; choose one of: {', '.join(sorted(STORES))}.")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def new_store(kind: str, dim: int, **options) -> VectorStore:
    """An empty store of `kind` for vectors of size `dim`."""
    return store_class(kind)(dim=dim, **options)


def open_store(kind: str, path: Path, dim: int) -> VectorStore:
    """A saved store of `kind` under `path`."""
    return store_class(kind).load(path, dim)
