"""OCR (rag/ingest/ocr.py) on pages rendered here with known text: images and scanned PDF pages
become documents with their page numbers, citations say OCR read them, nothing is invented from
blank or noise, and the per-page time limit and the page limit report pages by number while the
rest of the file is kept. Real RapidOCR throughout (its models ship in its wheel; ~1-3 s to load
once, then well under a second per small page): fast tier."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import make_settings
from fakes import ScriptedGenerator, ScriptedReader
from rag.config import Settings
from rag.index.corpus import load_corpus, read_document
from rag.ingest import ConversionError, converter_for
from rag.ingest.image import ImageConverter
from rag.ingest.ocr import NO_TEXT, OcrReader
from rag.ingest.pdf import PdfConverter
from rag.pipeline import Pipeline
from rag.types import Citation, Document
from test_ingest import make_pdf

FERRY = "The harbor ferry carries 300 passengers a day."
BRIDGE = "The old stone bridge was opened in 1932."
LIGHT = "The lighthouse keeper rings the bell at dawn."


def font(px: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), px)


def page(*lines: str, px: int = 32, width: int = 1100) -> Image.Image:
    """A white page with `lines` in black, as a scanner would give it (grey, 8-bit)."""
    step = round(px * 1.6)
    img = Image.new("L", (width, 2 * px + step * len(lines) + px), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((px, px + i * step), line, font=font(px), fill=0)
    return img


def dense_page() -> Image.Image:
    """A 200-dpi letter page filled with small print: seconds of OCR on any CPU."""
    img = Image.new("L", (1700, 2200), 255)
    draw = ImageDraw.Draw(img)
    f = font(22)
    for i in range(70):
        draw.text((120, 100 + i * 29), f"Line {i} of the long report on harbour freight, tonnage and berths {i * 7}.", font=f, fill=0)
    return img


def tiff(*pages: Image.Image) -> bytes:
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=list(pages[1:]), compression="tiff_deflate")
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def scanned_pdf(*pages: Image.Image) -> bytes:
    """A PDF whose pages are only images (no text layer), as a scanner writes it."""
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", resolution=150, save_all=True, append_images=list(pages[1:]))
    return buf.getvalue()


def mixed_pdf() -> bytes:
    """Page 1 with a text layer, page 2 a scan of the ferry sentence."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf([[BRIDGE]]))))
    writer.append(PdfReader(io.BytesIO(scanned_pdf(page("Harbor news", FERRY)))))
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pipeline_over(tmp_path: Path, files: dict[str, bytes], hash_embedder, span: str, **overrides) -> Pipeline:
    """A pipeline over these files, with the hash embedder, a scripted reader finding `span` and a
    scripted LLM repeating FERRY (the fast tier's stand-ins for the models)."""
    (tmp_path / "corpus").mkdir()
    for name, data in files.items():
        (tmp_path / "corpus" / name).write_bytes(data)
    settings = make_settings(tmp_path, use_reader=True, reranker="none", **overrides)
    return Pipeline(settings, embedder=hash_embedder, generator=ScriptedGenerator(FERRY), reader=ScriptedReader(span))


def ferry_citation(answer) -> Citation:
    assert not answer.refused, answer.reason
    found = [c for c in answer.citations if "300 passengers" in c.text]
    assert found, [c.text for c in answer.citations]
    return found[0]


def test_an_image_and_a_multi_page_tiff_are_indexed_with_their_pages(tmp_path, hash_embedder):
    files = {"notice.png": png(page("Bridge notice", BRIDGE)), "harbor.tiff": tiff(page("Lighthouse news", LIGHT), page("Harbor news", FERRY))}
    p = pipeline_over(tmp_path, files, hash_embedder, span="300")
    docs = {d.doc_id: d for d in load_corpus(p.settings.corpus_dir).documents}
    assert BRIDGE in docs["notice"].text and docs["notice"].pages == [0] and docs["notice"].ocr_pages == [1]
    harbor = docs["harbor"]
    assert harbor.pages[0] == 0 and len(harbor.pages) == 2 and harbor.ocr_pages == [1, 2]
    assert LIGHT in harbor.text[: harbor.pages[1]] and FERRY in harbor.text[harbor.pages[1] :]
    cited = ferry_citation(p.answer("How many passengers does the harbor ferry carry a day?"))
    assert (cited.doc_id, cited.page, cited.ocr) == ("harbor", 2, True)
    assert harbor.text[cited.start : cited.end] == cited.text


def test_a_scanned_pdf_page_is_read_by_ocr_and_cited_as_such(tmp_path, hash_embedder):
    out = PdfConverter().convert(mixed_pdf(), Path("report.pdf"))
    assert out.ocr_pages == [2] and out.text.startswith(BRIDGE) and FERRY in out.text[out.pages[1] :]
    p = pipeline_over(tmp_path, {"report.pdf": mixed_pdf()}, hash_embedder, span="300")
    cited = ferry_citation(p.answer("How many passengers does the harbor ferry carry a day?"))
    assert (cited.doc_id, cited.page, cited.ocr) == ("report", 2, True)
    bridge = p.answer("When was the old stone bridge opened?")
    assert [(c.page, c.ocr) for c in bridge.citations if "1932" in c.text] in ([(1, False)], [])  # the text layer's page is not OCR's


def test_a_pdf_of_only_scans_keeps_every_page(tmp_path):
    out = PdfConverter().convert(scanned_pdf(page(LIGHT), page(FERRY)), Path("scan.pdf"))
    assert out.ocr_pages == [1, 2] and out.text == f"{LIGHT}\n\n{FERRY}" and out.pages == [0, len(LIGHT) + 2]


@pytest.mark.parametrize("kind", ["blank", "noise", "blank-pdf", "noise-pdf"])
def test_an_image_of_nothing_is_skipped_with_no_text_found_by_ocr(tmp_path, kind):
    rng = np.random.default_rng(0)
    image = Image.new("L", (1000, 700), 255) if kind.startswith("blank") else Image.fromarray(rng.integers(0, 256, (700, 1000), dtype=np.uint8))
    path = tmp_path / (f"{kind}.pdf" if kind.endswith("pdf") else f"{kind}.png")
    path.write_bytes(scanned_pdf(image) if kind.endswith("pdf") else png(image))
    doc, problems = read_document(path, 10_000_000)
    assert doc is None
    assert [(p.name, p.action, p.reason) for p in problems] == [(path.name, "skipped", NO_TEXT)]


def test_a_page_over_the_time_limit_is_reported_by_number_and_the_others_kept(tmp_path):
    path = tmp_path / "scan.tiff"
    path.write_bytes(tiff(page(LIGHT), dense_page(), page(FERRY)))
    settings = Settings(ocr_page_timeout_s=1.5)
    converter_for(path, settings).convert(png(page("warm")), Path("warm.png"))  # the model loads before the clock starts
    start = time.perf_counter()
    doc, problems = read_document(path, 10_000_000, settings)
    took = time.perf_counter() - start
    assert [str(p) for p in problems] == ["scan.tiff: page 2 not read (OCR took over the 1.5 s limit (ocr_page_timeout_s))"]
    assert doc is not None and doc.ocr_pages == [1, 3] and len(doc.pages) == 3
    assert doc.text == f"{LIGHT}\n\n\n\n{FERRY}"  # page 2 empty, its offset kept
    assert took < 1.5 + 4, f"the dense page (~8 s of OCR here) was not stopped at its limit: {took:.1f} s"


def test_pages_past_the_page_limit_are_reported_and_the_first_ones_kept(tmp_path):
    path = tmp_path / "three.tif"
    path.write_bytes(tiff(page(BRIDGE), page(LIGHT), page(FERRY)))
    doc, problems = read_document(path, 10_000_000, Settings(ocr_max_pages=2))
    assert [str(p) for p in problems] == ["three.tif: page 3 not read (over the 2-page OCR limit per file (ocr_max_pages))"]
    assert doc.ocr_pages == [1, 2] and doc.text.startswith(f"{BRIDGE}\n\n{LIGHT}") and FERRY not in doc.text


def test_the_limits_reach_the_converter_through_the_environment(tmp_path, monkeypatch):
    """The app builds its converters without arguments: RAG_OCR_* still apply."""
    path = tmp_path / "three.tif"
    path.write_bytes(tiff(page(BRIDGE), page(LIGHT), page(FERRY)))
    monkeypatch.setenv("RAG_OCR_MAX_PAGES", "1")
    corpus = load_corpus(tmp_path)
    assert corpus.documents[0].ocr_pages == [1] and [p.action for p in corpus.problems] == ["pages 2, 3 not read"]


def test_ocr_loads_only_the_models_in_its_wheel_and_opens_no_connection(monkeypatch):
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    reader = OcrReader(threads=1)  # a new one: loads the models here, under the guard
    assert reader.read(page(FERRY), timeout_s=60) == FERRY
    assert opened == []


@pytest.mark.parametrize("make", [lambda: b"", lambda: b"not an image at all", lambda: png(page(FERRY))[:200]], ids=["empty", "garbage", "truncated"])
def test_bad_image_files_are_rejected_with_a_reason(make):
    with pytest.raises(ConversionError, match="^(empty file|not a readable image|no text found by OCR)"):
        ImageConverter().convert(make(), Path("x.png"))


def test_old_indexes_load_without_ocr_fields():
    doc = Document.model_validate({"doc_id": "d", "title": "T", "text": "x", "path": "", "sha256": ""})
    assert doc.ocr_pages == [] and Citation.model_validate({"n": 1, "doc_id": "d", "title": "T", "chunk_id": 0, "text": "x", "start": 0, "end": 1, "score": 1.0}).ocr is False
