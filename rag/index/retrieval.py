"""Question -> ranked chunks (dense + BM25, each ranker's top N fused by reciprocal rank; the
question's years checked; near-duplicates collapsed; the head reranked) -> evidence sentences."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ..config import Settings
from .embedding import Encoder
from .manifest import Index
from ..text import index_terms, terms
from ..types import Evidence, Hit

RERANK_CACHE = 256  # questions whose reranker scores are kept (a few KB each)


class Retriever:
    """Hybrid retrieval over an Index. Settings in the constructor, the question in the call.

    Per question the cost is one embedding, each ranker's top `rank_depth`, and a matrix product
    over the sentences of the retrieved chunks only: nothing loops over the whole corpus.
    """

    def __init__(self, index: Index, embedder: Encoder, settings: Settings, rerank: Callable[[str, list[str]], list[float]] | None = None) -> None:
        """
        Args:
            rerank: (question, passages) -> one score per passage, higher first; it orders the
                first `settings.rerank_depth` fused candidates (None: the fused order stands).
        """
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.rerank = rerank
        self._reranked: OrderedDict[tuple, list[float]] = OrderedDict()  # (question, chunk ids) -> scores
        self._reranked_lock = threading.Lock()

    def within(self, collections) -> "Retriever":
        """This retriever over the documents of `collections` only (rag/index/scope.py): every
        search is filtered inside, and BM25 and IDF count those documents alone. Reranker
        scores stay remembered per scope."""
        scoped = Retriever(self.index.within(collections), self.embedder, self.settings, rerank=self.rerank)
        scoped._reranked, scoped._reranked_lock = self._reranked, self._reranked_lock
        return scoped

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
            bm25_ids, bm25_scores = self.index.lexicon.top(index_terms(question), s.rank_depth)
            bm25 = dict(zip(bm25_ids.tolist(), bm25_scores.tolist()))
            for rank, i in enumerate(bm25_ids.tolist()):
                fused[i] = fused.get(i, 0.0) + 1.0 / (s.rrf_k + rank + 1)
            heads.append(bm25_ids[:extra].tolist())
        order = sorted(fused, key=lambda i: (-fused[i], i))
        depth = max(k, s.rerank_depth if self.rerank else 0)
        years = question_years(question) if s.year_constraints else set()
        if years:  # a passage on another year of the same thing goes down, one on this year up
            window = order[: depth + s.rerank_depth]
            for i in window:
                fused[i] += s.year_weight / (s.rrf_k + 1) * year_agreement(years, self.index.chunk(i).text)
            order = sorted(window, key=lambda i: (-fused[i], i)) + order[len(window) :]
        head = order[: depth * 2 + 2 * extra]
        if not head:
            return []
        extras = [i for h in heads for i in h]
        vectors = self.index.chunk_store.get(np.asarray(head + extras, dtype=np.int64))
        cosines = dict(zip(head + extras, (vectors @ q).tolist()))
        kept = _distinct(head, vectors[: len(head)], s.duplicate_cosine)[:depth]
        scores: dict[int, float] = {}
        if self.rerank and len(kept) > 1:
            reranked = kept[: s.rerank_depth]
            scores = dict(zip(reranked, self._rerank_scores(question, reranked)))
            kept = rerank_order(reranked, scores, s.rerank_fused_weight, s.rrf_k) + kept[len(reranked) :]
        top = kept[:k]
        if extras:  # each ranker's head, after the top k and without copies of anything before it
            row: dict[int, int] = {}
            for n, i in enumerate(head + extras):
                row.setdefault(i, n)
            pool = top + extras
            top = _distinct(pool, vectors[[row[i] for i in pool]], s.duplicate_cosine)
        return [
            Hit(chunk=self.index.chunk(i), score=fused.get(i, 0.0), dense=float(cosines[i]), bm25=bm25.get(i, 0.0), rerank=scores.get(i))
            for i in top
        ]

    def _rerank_scores(self, question: str, ids: list[int]) -> list[float]:
        """The reranker's scores, remembered for the last RERANK_CACHE questions: `search` and
        `candidates` rerank the same chunks, and `rag eval` asks both of each question."""
        key = (question, tuple(ids), getattr(self.index, "collections", None))
        with self._reranked_lock:
            if key in self._reranked:
                self._reranked.move_to_end(key)
                return self._reranked[key]
        assert self.rerank is not None
        scores = self.rerank(question, [self.index.chunk(i).text for i in ids])
        with self._reranked_lock:
            self._reranked[key] = scores
            while len(self._reranked) > RERANK_CACHE:
                self._reranked.popitem(last=False)
        return scores

    def evidence(self, question: str, hits: list[Hit], n: int) -> list[Evidence]:
        """The n sentences of the retrieved chunks that best support an answer (page furniture
        excluded).

        A sentence's score is its cosine with the question plus the IDF-weighted share of the
        question's key terms it contains, plus a small bonus for sentences of higher-ranked
        chunks. Reading 1-3 sentences instead of whole chunks keeps the 135M model on topic
        and the prompt short (prefill time dominates on CPU).
        """
        best_rank: dict[int, int] = {}
        furniture = self.index.furniture  # a site's notices and share lines are never evidence
        for rank, hit in enumerate(hits):
            for sid in self.index.chunk_sentences[hit.chunk.chunk_id]:
                if sid not in furniture:
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


_YEAR = re.compile(r"(?<![\d.,$])(1[5-9]\d\d|20\d\d)(?![\d%])")


def question_years(question: str) -> set[str]:
    """The years a question names (1500-2099), its constraints on which passage answers it.

    >>> sorted(question_years("Who won the 2022 edition, not the 2,021st or $2023?"))
    ['2022']
    """
    return set(_YEAR.findall(question))


def year_agreement(years: set[str], text: str) -> int:
    """+1 when the passage names one of the question's years, -1 when it names other years
    but none of them (another edition of the same event), 0 when it names no year.

    >>> year_agreement({"2022"}, "The 2021 final was won by Italy."), year_agreement({"2022"}, "In 2022 and 2021.")
    (-1, 1)
    """
    found = set(_YEAR.findall(text))
    if found & years:
        return 1
    return -1 if found else 0


def rerank_order(ids: list[int], scores: dict[int, float], fused_weight: float, k: int = 60) -> list[int]:
    """`ids` (in fused order) ordered by 1/(k + reranker rank) + fused_weight/(k + fused rank),
    ranks from 0, ties in fused order. fused_weight 0 is the reranker's order alone; a little of
    the fused order settles passages the reranker scores alike (five reviews of one product).

    >>> rerank_order([7, 8, 9], {7: 0.1, 8: 0.9, 9: 0.5}, 0.0)
    [8, 9, 7]
    >>> rerank_order([7, 8, 9], {7: 0.1, 8: 0.9, 9: 0.5}, 1.0)  # 7: 1/62 + 1/60; 9: 1/61 + 1/62
    [8, 7, 9]
    """
    by_score = sorted(range(len(ids)), key=lambda n: (-scores[ids[n]], n))
    rank = {n: r for r, n in enumerate(by_score)}
    return [ids[n] for n in sorted(range(len(ids)), key=lambda n: (-(1 / (k + rank[n]) + fused_weight / (k + n)), n))]


def _distinct(ids: list[int], vectors: np.ndarray, threshold: float) -> list[int]:
    """`ids` in order without the near-duplicates of an earlier one (cosine of their vectors at
    least `threshold`): a syndicated copy or a re-upload takes one place, the first.

    >>> v = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> _distinct([7, 8, 9], v, 0.98)
    [7, 9]
    """
    kept: list[int] = []
    rows: list[int] = []
    for n, i in enumerate(ids):
        if rows and float((vectors[rows] @ vectors[n]).max()) >= threshold:
            continue
        kept.append(i)
        rows.append(n)
    return kept


def _share(weights: dict[str, float], present: set[str]) -> float:
    """Weighted share of the terms in `weights` that are in `present` (0 when there are none).

    >>> _share({"cohere": 3.0, "rate": 1.0}, {"rate"})
    0.25
    """
    return sum(w for t, w in weights.items() if t in present) / (sum(weights.values()) or 1.0)
