"""BM25 kept per index segment and scored across segments, so an update never rebuilds it.

Each segment of the index (rag/index/manifest.py) stores its own `TermStats`: a sparse term-frequency
matrix of its chunks (rows in table order) and of its sentences, written once when the segment is
made. `Lexicon` combines the segments of one index version: per question it reads only the
postings of the question's terms, counts document frequencies over the rows that are still live
(a removed document's rows are masked, so its words stop counting at once), and scores with
BM25 as Lucene and bm25s's default do (k1 1.5, b 0.75, idf log(1 + (N - df + 0.5)/(df + 0.5))).
Nothing per question grows with the number of segments' rows beyond the postings it reads.
Lucene keeps statistics per segment in the same way (each segment is immutable; deletes are a
bit set until a merge).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse

from ..text import index_terms

K1 = 1.5
B = 0.75
EMPTY = "∅"  # the one term of a text with no content words, so every row has a length


class TermStats:
    """Term frequencies of one segment's chunks and sentences (rows in table order)."""

    def __init__(self, vocab: list[str], chunk_tf: sparse.csc_matrix, sentence_tf: sparse.csc_matrix) -> None:
        self.vocab = vocab
        self.term_ids = {t: n for n, t in enumerate(vocab)}
        self.chunk_tf = chunk_tf.tocsc()
        self.sentence_tf = sentence_tf.tocsc()
        self.chunk_len = np.asarray(self.chunk_tf.sum(axis=1)).ravel().astype(np.float32)

    @classmethod
    def of(cls, chunk_texts: list[str], sentence_texts: list[str]) -> "TermStats":
        vocab: dict[str, int] = {}
        matrices = []
        for texts in (chunk_texts, sentence_texts):
            rows, cols, vals = [], [], []
            for row, text in enumerate(texts):
                for term, count in Counter(index_terms(text) or [EMPTY]).items():
                    rows.append(row)
                    cols.append(vocab.setdefault(term, len(vocab)))
                    vals.append(count)
            matrices.append((rows, cols, vals, len(texts)))
        shape_cols = len(vocab)
        chunk_tf, sentence_tf = (
            sparse.csc_matrix((np.asarray(v, dtype=np.float32), (np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64))), shape=(n, shape_cols))
            for r, c, v, n in matrices
        )
        return cls(list(vocab), chunk_tf, sentence_tf)

    def rows(self, chunk_rows: np.ndarray, sentence_rows: np.ndarray) -> "TermStats":
        """The stats of a subset of rows (a segment without its removed documents)."""
        return TermStats(self.vocab, self.chunk_tf[chunk_rows], self.sentence_tf[sentence_rows])

    @classmethod
    def concat(cls, parts: list["TermStats"]) -> "TermStats":
        """One segment's stats from several (a merge): vocabularies united, rows stacked in order."""
        vocab: dict[str, int] = {}
        chunk_parts, sentence_parts = [], []
        for part in parts:
            remap = np.asarray([vocab.setdefault(t, len(vocab)) for t in part.vocab], dtype=np.int64)
            for matrix, out in ((part.chunk_tf, chunk_parts), (part.sentence_tf, sentence_parts)):
                coo = matrix.tocoo()
                out.append((coo.row, remap[coo.col], coo.data, matrix.shape[0]))
        width = len(vocab)

        def stack(pieces):
            offset, rows, cols, vals = 0, [], [], []
            for r, c, v, n in pieces:
                rows.append(r + offset)
                cols.append(c)
                vals.append(v)
                offset += n
            cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt))
            return sparse.csc_matrix((cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))), shape=(offset, width))

        return cls(list(vocab), stack(chunk_parts), stack(sentence_parts))

    # -- files ----------------------------------------------------------------------------
    def save(self, folder: Path) -> list[Path]:
        """Write terms.json and the two matrices; returns the files written."""
        folder = Path(folder)
        (folder / "terms.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        sparse.save_npz(folder / "chunk_tf.npz", self.chunk_tf)
        sparse.save_npz(folder / "sentence_tf.npz", self.sentence_tf)
        return [folder / "terms.json", folder / "chunk_tf.npz", folder / "sentence_tf.npz"]

    @classmethod
    def load(cls, folder: Path) -> "TermStats":
        folder = Path(folder)
        vocab = json.loads((folder / "terms.json").read_text(encoding="utf-8"))
        if not isinstance(vocab, list):
            raise ValueError("terms.json is not a list")
        chunk_tf, sentence_tf = sparse.load_npz(folder / "chunk_tf.npz"), sparse.load_npz(folder / "sentence_tf.npz")
        if chunk_tf.shape[1] != len(vocab) or sentence_tf.shape[1] != len(vocab):
            raise ValueError("the term matrices disagree with terms.json")
        return cls(vocab, chunk_tf, sentence_tf)


class Lexicon:
    """BM25 over the live chunks of several segments, and term weights over their sentences.

    Args:
        parts: per segment, (its TermStats, its chunk ids in row order, which chunk rows are
            live, which sentence rows are live).
    """

    def __init__(self, parts: list[tuple[TermStats, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.parts = parts
        self.n_chunks = int(sum(int(alive.sum()) for _, _, alive, _ in parts))
        self.n_sentences = int(sum(int(alive.sum()) for _, _, _, alive in parts))
        total_len = sum(float(stats.chunk_len[alive].sum()) for stats, _, alive, _ in parts)
        self.avg_len = total_len / self.n_chunks if self.n_chunks else 1.0
        self.default_idf = math.log(1 + (self.n_sentences + 0.5) / 0.5)

    def top(self, query_terms: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best live chunks with a positive BM25 score: (chunk ids, scores), best first,
        ties by chunk id (as one bm25s index over every chunk in table order ranked them)."""
        df: Counter[str] = Counter()  # live chunks holding each term, over all segments
        for term in dict.fromkeys(query_terms):
            for stats, _, alive, _ in self.parts:
                col = stats.term_ids.get(term)
                if col is not None:
                    lo, hi = stats.chunk_tf.indptr[col], stats.chunk_tf.indptr[col + 1]
                    df[term] += int(alive[stats.chunk_tf.indices[lo:hi]].sum())
        if not df or self.n_chunks == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        idf = {t: math.log(1 + (self.n_chunks - c + 0.5) / (c + 0.5)) for t, c in df.items() if c}
        ids_out, scores_out = [], []
        for stats, chunk_ids, alive, _ in self.parts:
            scores = np.zeros(len(chunk_ids), dtype=np.float32)
            for term in query_terms:  # a repeated question word counts again, as in bm25s
                col = stats.term_ids.get(term)
                if col is None or term not in idf:
                    continue
                lo, hi = stats.chunk_tf.indptr[col], stats.chunk_tf.indptr[col + 1]
                rows, tf = stats.chunk_tf.indices[lo:hi], stats.chunk_tf.data[lo:hi]
                norm = K1 * (1 - B + B * stats.chunk_len[rows] / self.avg_len)
                scores[rows] += np.float32(idf[term]) * (tf * (K1 + 1) / (tf + norm))
            scores[~alive] = 0
            hit = np.flatnonzero(scores > 0)
            if len(hit) > k:
                hit = hit[np.argpartition(-scores[hit], k - 1)[:k]]
            ids_out.append(chunk_ids[hit])
            scores_out.append(scores[hit])
        ids = np.concatenate(ids_out).astype(np.int64)
        scores = np.concatenate(scores_out)
        order = np.lexsort((ids, -scores))[:k]
        return ids[order], scores[order]

    def idf(self, term: str) -> float:
        """A term's IDF over the live sentences (rare terms weigh more); an unknown term gets the
        largest value, `default_idf`."""
        count = 0
        for stats, _, _, alive in self.parts:
            col = stats.term_ids.get(term)
            if col is not None:
                lo, hi = stats.sentence_tf.indptr[col], stats.sentence_tf.indptr[col + 1]
                count += int(alive[stats.sentence_tf.indices[lo:hi]].sum())
        if count == 0:
            return self.default_idf
        return math.log(1 + (self.n_sentences - count + 0.5) / (count + 0.5))
