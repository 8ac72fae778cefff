"""What one reader may see of an index: the documents, chunks, vectors and BM25 statistics of
some collections only, with the Index's own interface, so retrieval and answering run on it
unchanged.

A team's server answers each question inside the asker's collections (docs/team.md). Filtering
happens inside each search, not after it: the vector stores search among the allowed rows only
(rag/store: an id selector, or exact scoring of the allowed rows), and BM25 counts document
frequencies, lengths and IDF over the allowed chunks and sentences only, so neither a ranking
nor a score nor an "unknown word" refusal depends on text outside them. A lookup of a chunk or
sentence outside the scope raises KeyError, as for a removed one.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .bm25 import Lexicon
from ..types import Chunk, Document, Sentence


class ScopedStore:
    """A SegmentedStore whose searches keep to `allowed` ids; `get` is the store's own (callers
    only ever ask for ids a scoped search or table gave them)."""

    kind = "scoped"

    def __init__(self, store, allowed: np.ndarray) -> None:
        self.store = store
        self.allowed = allowed
        self.dim = store.dim

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.search(vectors, k, allowed=self.allowed)

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self.store.get(ids)

    def count(self) -> int:
        return len(self.allowed)


class IndexView:
    """`index` restricted to the documents of `collections` (read-only, like the Index)."""

    def __init__(self, index, collections: frozenset[str]) -> None:
        """`index`: a rag.index.manifest.Index (which makes its views through `Index.within`)."""
        self.base = index
        self.collections = collections
        self.manifest = index.manifest
        self.documents: dict[str, Document] = {i: d for i, d in index.documents.items() if d.collection in collections}

    @property
    def build(self) -> str | None:
        return self.base.build

    @cached_property
    def _masks(self):
        """Per segment: (segment, table, its live chunk rows in scope, its live sentence rows in scope)."""
        docs = self.documents
        out = []
        for seg, t, live_chunks, live_sentences in self.base._views[4]:
            chunks_in = live_chunks & np.fromiter((c.doc_id in docs for c in t.chunks), dtype=bool, count=len(t.chunks))
            sentences_in = live_sentences & np.fromiter((s.doc_id in docs for s in t.sentences), dtype=bool, count=len(t.sentences))
            out.append((seg, t, chunks_in, sentences_in))
        return out

    @cached_property
    def _chunk_ids(self) -> np.ndarray:
        ids = [np.asarray([c.chunk_id for c in t.chunks], dtype=np.int64)[mask] for _, t, mask, _ in self._masks]
        return np.sort(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)

    @cached_property
    def chunks(self) -> list[Chunk]:
        return [c for c in self.base.chunks if c.doc_id in self.documents]

    @cached_property
    def sentences(self) -> list[Sentence]:
        return [s for s in self.base.sentences if s.doc_id in self.documents]

    @property
    def chunk_sentences(self) -> dict[int, list[int]]:
        return self.base.chunk_sentences  # read only for chunks of this scope

    def chunk(self, chunk_id: int) -> Chunk:
        c = self.base.chunk(chunk_id)
        if c.doc_id not in self.documents:
            raise KeyError(chunk_id)
        return c

    def sentence(self, sentence_id: int) -> Sentence:
        s = self.base.sentence(sentence_id)
        if s.doc_id not in self.documents:
            raise KeyError(sentence_id)
        return s

    def has_chunk(self, chunk_id: int) -> bool:
        return self.base.has_chunk(chunk_id) and self.base.chunk(chunk_id).doc_id in self.documents

    @cached_property
    def chunk_store(self) -> ScopedStore:
        return ScopedStore(self.base.chunk_store, self._chunk_ids)

    @property
    def sentence_store(self):
        return self.base.sentence_store  # only `get` of sentences of this scope's chunks

    @cached_property
    def lexicon(self) -> Lexicon:
        """BM25 and IDF over this scope's chunks and sentences only."""
        return Lexicon([(seg.stats, np.asarray([c.chunk_id for c in t.chunks], dtype=np.int64), chunks_in, sentences_in) for seg, t, chunks_in, sentences_in in self._masks])

    @property
    def furniture(self) -> set[int]:
        return self.base.furniture  # ids of sentences that are never evidence, wherever they are

    def prepare(self) -> "IndexView":
        self.base.prepare()
        self.chunk_store, self.lexicon  # noqa: B018
        return self

    def within(self, collections) -> "IndexView":
        return self.base.within(frozenset(collections) & self.collections)
