"""One read-only store over the stores of an index's segments, minus the rows of removed documents.

The index (rag/index/manifest.py) keeps its rows in immutable segments, each with its own store; ids of
a later segment are all above those of an earlier one. A search asks every segment for its top
k (plus as many as it has removed rows, which are then dropped) and merges by score; `get`
routes each id to the segment whose range holds it. Any store kind works underneath.
"""

from __future__ import annotations

import numpy as np

from .base import VectorStore


class SegmentedStore:
    """Search and get over `stores` (ids of stores[i] are at least firsts[i]), without `removed` ids."""

    kind = "segments"

    def __init__(self, stores: list[VectorStore], firsts: list[int], removed: list[np.ndarray], dim: int) -> None:
        if not (len(stores) == len(firsts) == len(removed)):
            raise ValueError("one first id and one removed-id array per store")
        if any(b < a for a, b in zip(firsts, firsts[1:])):
            raise ValueError("segments must be in id order")
        self.stores = stores
        self.firsts = np.asarray(firsts, dtype=np.int64)
        self.removed = [np.unique(np.asarray(r, dtype=np.int64)) for r in removed]
        self.dim = dim

    def search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top k over every segment; with `allowed` (sorted ids, none of them removed), each
        segment searches among its share of them only."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        q = len(vectors)
        all_scores, all_ids = [np.full((q, 0), -np.inf, dtype=np.float32)], [np.full((q, 0), -1, dtype=np.int64)]
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            bounds = np.searchsorted(allowed, np.append(self.firsts[1:], np.iinfo(np.int64).max))
        for n, (store, removed) in enumerate(zip(self.stores, self.removed)):
            live = store.count() - len(removed)
            if live <= 0:
                continue
            if allowed is not None:
                mine = allowed[(bounds[n - 1] if n else 0) : bounds[n]]
                if len(mine):
                    scores, ids = store.search(vectors, min(int(k), len(mine)), allowed=mine)
                    all_scores.append(scores.astype(np.float32))
                    all_ids.append(ids.astype(np.int64))
                continue
            scores, ids = store.search(vectors, min(int(k) + len(removed), store.count()))
            if len(removed):
                gone = np.isin(ids, removed)
                scores = np.where(gone, -np.inf, scores)
                ids = np.where(gone, -1, ids)
            all_scores.append(scores.astype(np.float32))
            all_ids.append(ids.astype(np.int64))
        scores, ids = np.concatenate(all_scores, axis=1), np.concatenate(all_ids, axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
        ids = np.where(np.isfinite(scores), ids, -1)
        if scores.shape[1] < k:  # fewer rows than k in all: pad as a store does
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        which = np.searchsorted(self.firsts, ids, side="right") - 1
        for n in np.unique(which).tolist():
            rows = np.flatnonzero(which == n)
            part = ids[rows]
            if n < 0 or np.isin(part, self.removed[n]).any():
                raise KeyError(int(part[0]))
            out[rows] = self.stores[n].get(part)
        return out

    def count(self) -> int:
        return int(sum(s.count() - len(r) for s, r in zip(self.stores, self.removed)))
