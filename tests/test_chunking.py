"""Chunking: known outputs, offsets that round-trip, and odd input."""

from __future__ import annotations

import pytest

from rag.index.chunking import chunk_document, chunk_text, split_sentences
from rag.index.corpus import load_corpus
from tests.conftest import CORPUS


def words(text: str) -> int:
    return len(text.split())


def test_known_sentences():
    text = "Dr. Smith paid $14.3 billion. He left!\n\nHeadline without stop\nNext one? Yes."
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "Dr. Smith paid $14.3 billion.",
        "He left!",
        "Headline without stop",
        "Next one?",
        "Yes.",
    ]


def test_known_chunks_with_overlap():
    text = "A b. C d. E f. G h."
    spans = chunk_text(text, size=4, overlap=2, count=words)
    assert [text[s:e] for s, e in spans] == ["A b. C d.", "C d. E f.", "E f. G h."]


def test_overlap_must_be_smaller_than_size():
    with pytest.raises(ValueError, match="overlap must be less than size"):
        chunk_text("x", size=4, overlap=4, count=words)


@pytest.mark.parametrize("text", ["", "   \n\t ", "🙂🙂 🙂", "مرحبا بالعالم. שלום עולם.", "a" * 5000])
def test_odd_input_never_breaks_offsets(text):
    chunks, sentences = chunk_document("d", text, size=32, overlap=8, count=words)
    for piece in [*chunks, *sentences]:
        assert text[piece.start : piece.end] == piece.text
        assert piece.text.strip()


def test_long_sentence_is_split_at_words():
    text = " ".join(f"w{i}" for i in range(100)) + "."
    spans = chunk_text(text, size=10, overlap=2, count=words)
    assert all(words(text[s:e]) <= 10 for s, e in spans)
    assert " ".join(text[s:e] for s, e in spans).split()[-1] == "w99."


def test_every_real_chunk_round_trips(embedder):
    """Every chunk and sentence of the real corpus is the document's text at its offsets, and no
    chunk exceeds the token budget unless it is a single over-long sentence piece."""
    corpus = load_corpus(CORPUS)
    for doc in corpus.documents:
        chunks, sentences = chunk_document(doc.doc_id, doc.text, 128, 32, embedder.count_tokens)
        assert chunks and sentences
        raw = doc.text
        for c in chunks:
            assert raw[c.start : c.end] == c.text
            assert embedder.count_tokens(c.text) <= 128
        for s in sentences:
            assert raw[s.start : s.end] == s.text
        # consecutive chunks overlap or touch: no text is lost between them
        for a, b in zip(chunks, chunks[1:]):
            assert b.start <= a.end + 2 and b.start > a.start
