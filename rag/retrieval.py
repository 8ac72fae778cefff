"""Question -> ranked chunks (dense + BM25, fused by reciprocal rank) -> evidence sentences."""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter

import bm25s
import numpy as np

from .embedding import Embedder
from .index import Index
from .text import terms
from .types import Evidence, Hit

# bm25s sets its own logger to DEBUG and logs every index build; keep it to warnings.
logging.getLogger("bm25s").setLevel(logging.WARNING)


class _BM25:
    """bm25s over our own stemmed terms, so BM25 and the overlap signal see the same words."""

    def __init__(self, texts: list[str]) -> None:
        tokenized = [terms(t) or ["∅"] for t in texts]
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(tok, len(vocab)) for tok in doc] for doc in tokenized]
        self.vocab = vocab
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
        n = len(texts)
        df = Counter(tok for doc in tokenized for tok in set(doc))
        self.idf = {tok: math.log(1 + (n - c + 0.5) / (c + 0.5)) for tok, c in df.items()}
        self.default_idf = math.log(1 + (n + 0.5) / 0.5)

    def scores(self, query_terms: list[str]) -> np.ndarray:
        known = [t for t in query_terms if t in self.vocab]
        if not known:
            return np.zeros(self.model.scores["num_docs"], dtype=np.float32)
        return np.asarray(self.model.get_scores(known), dtype=np.float32)


class Retriever:
    """Hybrid retrieval over an Index. Settings in the constructor, the question in the call."""

    def __init__(
        self, index: Index, embedder: Embedder, hybrid: bool = True, rrf_k: int = 60, overlap_weight: float = 0.5, rank_bonus: float = 0.05,
        extra_per_list: int = 0,
    ) -> None:
        self.overlap_weight = overlap_weight
        self.extra_per_list = extra_per_list
        self.rank_bonus = rank_bonus
        self.index = index
        self.embedder = embedder
        self.hybrid = hybrid
        self.rrf_k = rrf_k
        self._lock = threading.Lock()
        self._chunk_bm25: _BM25 | None = None
        self._sentence_bm25: _BM25 | None = None
        self._sentence_terms = [set(terms(s.text)) for s in index.sentences]

    def _bm25(self) -> tuple[_BM25, _BM25]:
        with self._lock:
            if self._chunk_bm25 is None:
                self._chunk_bm25 = _BM25([c.text for c in self.index.chunks])
                self._sentence_bm25 = _BM25([s.text for s in self.index.sentences])
        return self._chunk_bm25, self._sentence_bm25  # type: ignore[return-value]

    def search(self, question: str, k: int) -> list[Hit]:
        """Top-k chunks. Dense cosine and BM25 each rank all chunks; RRF fuses the ranks
        (score = sum of 1/(rrf_k + rank)), which needs no score calibration between the two."""
        return self._ranked(question, k, extra=0)

    def candidates(self, question: str, k: int) -> list[Hit]:
        """The top-k chunks plus up to `extra_per_list` more from the head of each ranker's own
        list: RRF rewards chunks that both rankers like, and drops one that only one ranks first
        (the only sentence naming a rare word, say), which still deserves a look for evidence."""
        return self._ranked(question, k, extra=self.extra_per_list)

    def _ranked(self, question: str, k: int, extra: int) -> list[Hit]:
        q = self.embedder.encode_query(question)
        n = self.index.chunk_vectors.ntotal
        dense_scores, dense_ids = self.index.chunk_vectors.search(q[None, :], n)
        dense = np.zeros(n, dtype=np.float32)
        dense[dense_ids[0]] = dense_scores[0]
        fused = np.zeros(n, dtype=np.float64)
        for rank, i in enumerate(dense_ids[0]):
            fused[i] += 1.0 / (self.rrf_k + rank + 1)
        bm25 = np.zeros(n, dtype=np.float32)
        heads = [list(dense_ids[0][:extra])]
        if self.hybrid:
            bm25 = self._bm25()[0].scores(terms(question))
            order = np.argsort(-bm25, kind="stable")
            for rank, i in enumerate(order):
                if bm25[i] <= 0:
                    break
                fused[i] += 1.0 / (self.rrf_k + rank + 1)
            heads.append([i for i in order[:extra] if bm25[i] > 0])
        top = list(np.argsort(-fused, kind="stable")[:k])
        for head in heads:
            top += [i for i in head if i not in top]
        return [
            Hit(chunk=self.index.chunks[i], score=float(fused[i]), dense=float(dense[i]), bm25=float(bm25[i]))
            for i in top
        ]

    def evidence(self, question: str, hits: list[Hit], n: int) -> list[Evidence]:
        """The n sentences of the retrieved chunks that best support an answer.

        A sentence's score is its cosine with the question plus the IDF-weighted share of the
        question's key terms it contains, plus a small bonus for sentences of higher-ranked
        chunks. Reading 1-3 sentences instead of whole chunks keeps the 135M model on topic
        and the prompt short (prefill time dominates on CPU).
        """
        q = self.embedder.encode_query(question)
        weights = self._term_weights(question)
        chunk_rank = {h.chunk.chunk_id: r for r, h in enumerate(hits)}
        spans = [(h.chunk.doc_id, h.chunk.start, h.chunk.end, h.chunk.chunk_id) for h in hits]
        candidates: dict[int, tuple[float, float, float]] = {}
        for s in self.index.sentences:
            ranks = [chunk_rank[cid] for doc, a, b, cid in spans if s.doc_id == doc and s.start < b and s.end > a]
            if not ranks:
                continue
            vec = self.index.sentence_vectors.reconstruct(s.sentence_id)
            dense = float(np.dot(q, vec))
            overlap = _share(weights, self._sentence_terms[s.sentence_id])
            score = dense + self.overlap_weight * overlap + self.rank_bonus / (1 + min(ranks))
            candidates[s.sentence_id] = (score, dense, overlap)
        best = sorted(candidates.items(), key=lambda kv: -kv[1][0])[:n]
        return [
            Evidence(sentence=self.index.sentences[sid], score=sc, dense=d, overlap=o) for sid, (sc, d, o) in best
        ]

    def coverage(self, question: str, evidence: list[Evidence]) -> float:
        """IDF-weighted share of the question's key terms found anywhere in the evidence."""
        present = set().union(*(self._sentence_terms[e.sentence.sentence_id] for e in evidence)) if evidence else set()
        return _share(self._term_weights(question), present)

    def _term_weights(self, question: str) -> dict[str, float]:
        """The question's key terms, each weighted by its IDF over the sentences (unknown terms
        weigh the most: they are what a passage would have to add)."""
        bm25 = self._bm25()[1]
        return {t: bm25.idf.get(t, bm25.default_idf) for t in set(terms(question))}


def _share(weights: dict[str, float], present: set[str]) -> float:
    """Weighted share of the terms in `weights` that are in `present` (0 when there are none).

    >>> _share({"cohere": 3.0, "rate": 1.0}, {"rate"})
    0.25
    """
    return sum(w for t, w in weights.items() if t in present) / (sum(weights.values()) or 1.0)
