"""The text converter and the corpus loader: the registry picks a converter by suffix; text keeps today's decoding; pages reach citations."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answering.citations import to_citation
from rag.index.corpus import load_corpus
from rag.ingest import CONVERTERS, ConversionError, Converter, converter_for
from rag.ingest.text import TextConverter
from rag.types import Document, Evidence, Sentence


@pytest.mark.parametrize("suffix", sorted(CONVERTERS))
def test_every_registered_converter_reads_its_suffix(suffix):
    converter = converter_for(Path(f"a{suffix.upper()}"))  # suffixes match in any case
    assert isinstance(converter, Converter) and suffix in converter.suffixes


def test_unsupported_type_names_the_supported_ones():
    with pytest.raises(ConversionError, match=r"unsupported file type '\.gif'; supported: .*\.png.*\.txt"):
        converter_for(Path("animation.gif"))


def test_text_keeps_bytes_as_text_and_reports_repairs():
    convert = TextConverter().convert
    assert convert("Zürich\r\nline".encode("utf-8"), Path("a.txt")).text == "Zürich\r\nline"  # unchanged, so offsets hold
    bom = convert(b"\xef\xbb\xbfTitle", Path("a.txt"))
    assert bom.text == "Title" and not bom.repairs
    latin = convert("Café".encode("latin-1"), Path("a.txt"))
    assert latin.text == "Caf\ufffd"
    assert [(r.action, r.reason) for r in latin.repairs] == [("decoded with replacement", "not valid UTF-8 (unexpected end of data at byte 3)")]
    with pytest.raises(ConversionError, match="binary"):
        convert(b"a\x00b", Path("a.txt"))


def test_corpus_documents_come_from_their_converter(tmp_path):
    (tmp_path / "a.md").write_text("# Heading\nBody text.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes("Café news\n".encode("latin-1"))
    corpus = load_corpus(tmp_path)
    assert [(d.doc_id, d.title, d.pages) for d in corpus.documents] == [("a", "# Heading", []), ("b", "Caf\ufffd news", [])]
    assert [(p.name, p.action) for p in corpus.problems] == [("b.txt", "decoded with replacement")]


def test_citation_page_comes_from_the_document_pages():
    doc = Document(doc_id="d", title="T", text="One. Two. Three.", path="", sha256="", pages=[0, 5, 10])
    for start, page in [(0, 1), (5, 2), (7, 2), (10, 3)]:
        s = Sentence(doc_id="d", sentence_id=0, chunk_id=0, text=doc.text[start:], start=start, end=len(doc.text))
        assert to_citation(1, Evidence(sentence=s, score=1, dense=1, overlap=1), doc).page == page
    unpaged = doc.model_copy(update={"pages": []})
    assert to_citation(1, Evidence(sentence=s, score=1, dense=1, overlap=1), unpaged).page is None
