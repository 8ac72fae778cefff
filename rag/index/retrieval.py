"""Question -> ranked chunks (dense + BM25, each ranker's top N fused by reciprocal rank) -> evidence sentences."""

from __future__ import annotations

import numpy as np

from ..config import Settings
from .embedding import Encoder
from .manifest import Index
from ..text import terms
from ..types import Evidence, Hit


class Retriever:
    """Hybrid retrieval over an Index. Settings in the constructor, the question in the call.

    Per question the cost is one embedding, each ranker's top `rank_depth`, and a matrix product
    over the sentences of the retrieved chunks only: nothing loops over the whole corpus.
    """

    def __init__(self, index: Index, embedder: Encoder, settings: Settings) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings

    def warm_up(self) -> None:
        """Combine the segments' BM25 statistics and lookup tables now, not on the first question.
        (Nothing is tokenized: each segment counted its terms when it was written.)"""
        self.index.prepare()

    def _terms_of(self, sentence_id: int) -> set[str]:
        """A sentence's terms, counted when needed (~6 us; a table of every sentence's terms
        would cost memory in proportion to the corpus)."""
        return set(terms(self.index.sentence(sentence_id).text))

    def search(self, question: str, k: int) -> list[Hit]:
        """Top-k chunks. Dense cosine and BM25 each return their top `rank_depth`; RRF fuses the
        ranks (score = sum of 1/(rrf_k + rank)), which needs no score calibration between the two."""
        return self._ranked(question, k, extra=0)

    def candidates(self, question: str, k: int) -> list[Hit]:
        """The top-k chunks plus up to `extra_candidates` more from the head of each ranker's own
        list: RRF rewards chunks that both rankers like, and drops one that only one ranks first
        (the only sentence naming a rare word, say), which still deserves a look for evidence."""
        return self._ranked(question, k, extra=self.settings.extra_candidates)

    def _ranked(self, question: str, k: int, extra: int) -> list[Hit]:
        s = self.settings
        q = self.embedder.encode_query(question)
        _, dense_ids = self.index.chunk_store.search(q[None, :], s.rank_depth)
        # -1 pads; an id the table lacks is a row a store on a server gained mid-update
        dense_ids = np.asarray([i for i in dense_ids[0].tolist() if i >= 0 and self.index.has_chunk(i)], dtype=np.int64)
        fused: dict[int, float] = {}
        for rank, i in enumerate(dense_ids.tolist()):
            fused[i] = fused.get(i, 0.0) + 1.0 / (s.rrf_k + rank + 1)
        heads = [dense_ids[:extra].tolist()]
        bm25: dict[int, float] = {}
        if s.hybrid:
            bm25_ids, bm25_scores = self.index.lexicon.top(terms(question), s.rank_depth)
            bm25 = dict(zip(bm25_ids.tolist(), bm25_scores.tolist()))
            for rank, i in enumerate(bm25_ids.tolist()):
                fused[i] = fused.get(i, 0.0) + 1.0 / (s.rrf_k + rank + 1)
            heads.append(bm25_ids[:extra].tolist())
        top = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        for head in heads:
            top += [i for i in head if i not in top]
        cosines = self.index.chunk_store.get(np.asarray(top, dtype=np.int64)) @ q
        return [
            Hit(chunk=self.index.chunk(i), score=fused[i], dense=float(d), bm25=bm25.get(i, 0.0))
            for i, d in zip(top, cosines.tolist())
        ]

    def evidence(self, question: str, hits: list[Hit], n: int) -> list[Evidence]:
        """The n sentences of the retrieved chunks that best support an answer.

        A sentence's score is its cosine with the question plus the IDF-weighted share of the
        question's key terms it contains, plus a small bonus for sentences of higher-ranked
        chunks. Reading 1-3 sentences instead of whole chunks keeps the 135M model on topic
        and the prompt short (prefill time dominates on CPU).
        """
        best_rank: dict[int, int] = {}
        for rank, hit in enumerate(hits):
            for sid in self.index.chunk_sentences[hit.chunk.chunk_id]:
                best_rank.setdefault(sid, rank)
        return self.score_sentences(question, best_rank)[:n]

    def score_sentences(self, question: str, best_rank: dict[int, int]) -> list[Evidence]:
        """Score sentences (id -> rank of the best chunk holding it) as evidence, best first."""
        if not best_rank:
            return []
        s = self.settings
        q = self.embedder.encode_query(question)
        weights = self._term_weights(question)
        ids = sorted(best_rank)
        dense = (self.index.sentence_store.get(np.asarray(ids, dtype=np.int64)) @ q).tolist()
        scored = []
        for sid, d in zip(ids, dense):
            overlap = _share(weights, self._terms_of(sid))
            scored.append((d + s.overlap_weight * overlap + s.rank_bonus / (1 + best_rank[sid]), d, overlap, sid))
        best = sorted(scored, key=lambda row: -row[0])  # stable: ties keep sentence order
        return [Evidence(sentence=self.index.sentence(sid), score=sc, dense=d, overlap=o) for sc, d, o, sid in best]

    def sentences_at(self, hit: Hit, start: int, end: int) -> list[int]:
        """Ids of the sentences of `hit`'s chunk that overlap its characters start:end (a
        reader's span lies in one sentence, rarely across two)."""
        a, b = hit.chunk.start + start, hit.chunk.start + end
        sentences = (self.index.sentence(sid) for sid in self.index.chunk_sentences[hit.chunk.chunk_id])
        return [sent.sentence_id for sent in sentences if sent.start < b and sent.end > a]

    def coverage(self, question: str, evidence: list[Evidence]) -> float:
        """IDF-weighted share of the question's key terms found anywhere in the evidence."""
        present = set().union(*(self._terms_of(e.sentence.sentence_id) for e in evidence)) if evidence else set()
        return _share(self._term_weights(question), present)

    def term_weights(self, question: str) -> dict[str, float]:
        """The question's key terms with their IDF over the sentences (what the answer policy weighs)."""
        return self._term_weights(question)

    def unknown_terms(self, weights: dict[str, float]) -> set[str]:
        """Of `term_weights`' terms, those in no live sentence of the corpus (they carry the
        unknown-term IDF), without looking any term up again."""
        return {t for t, w in weights.items() if w >= self.index.lexicon.default_idf}

    def _term_weights(self, question: str) -> dict[str, float]:
        """The question's key terms, each weighted by its IDF over the sentences (unknown terms
        weigh the most: they are what a passage would have to add)."""
        lexicon = self.index.lexicon
        return {t: lexicon.idf(t) for t in set(terms(question))}


def _share(weights: dict[str, float], present: set[str]) -> float:
    """Weighted share of the terms in `weights` that are in `present` (0 when there are none).

    >>> _share({"cohere": 3.0, "rate": 1.0}, {"rate"})
    0.25
    """
    return sum(w for t, w in weights.items() if t in present) / (sum(weights.values()) or 1.0)
