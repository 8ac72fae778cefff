"""Converters on real files made here: known text, titles and page offsets, and every bad input."""

from __future__ import annotations

import codecs
import io
import os
import zipfile
from pathlib import Path

import pytest

from rag.ingest import CONVERTERS, ConversionError, converter_for
from rag.ingest.charset import decode_text
from rag.ingest.docx import DocxConverter
from rag.ingest.html import HtmlConverter
from rag.ingest.pdf import PdfConverter

# ---------------------------------------------------------------------------------------------
# Real files, written byte by byte (PDF) or by the format's own library (DOCX).


def _pdf_string(line: str) -> bytes:
    raw = line.encode("cp1252")  # Helvetica with WinAnsiEncoding reads cp1252 bytes
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def make_pdf(pages: list[list[str] | None], title: str | None = None) -> bytes:
    """A valid PDF: each page shows its lines in Helvetica, or (None) only an image, like a scan."""
    objects: dict[int, bytes] = {}
    n_pages = len(pages)
    page_ids = [5 + 2 * i for i in range(n_pages)]
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % p for p in page_ids), n_pages)
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    pixels = bytes([0, 255, 255, 0] * 16)
    objects[4] = b"<< /Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceGray /BitsPerComponent 8 /Length %d >>\nstream\n%s\nendstream" % (
        len(pixels),
        pixels,
    )
    for page_id, lines in zip(page_ids, pages):
        if lines is None:
            content = b"q 400 0 0 400 100 300 cm /Im1 Do Q"
        else:
            content = b"BT /F1 12 Tf 16 TL 72 720 Td " + b" T* ".join(_pdf_string(line) + b" Tj" for line in lines) + b" ET"
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> /Contents %d 0 R >>"
            % (page_id + 1)
        )
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)
    info = b""
    if title is not None:
        info_id = max(objects) + 1
        objects[info_id] = b"<< /Title %s >>" % _pdf_string(title)
        info = b" /Info %d 0 R" % info_id
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, objects[number]))
    xref = out.tell()
    size = max(objects) + 1
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for number in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[number])
    out.write(b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (size, info, xref))
    return out.getvalue()


def encrypt_pdf(data: bytes, user_password: str, algorithm: str = "AES-128") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(title: str = "", paragraphs: tuple[str, ...] = (), table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table):
            for cell, value in zip(row.cells, values):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def convert_file(path: Path):
    """What the index does with a file: its suffix picks the converter, which reads its bytes."""
    return converter_for(path).convert(path.read_bytes(), path)


# ---------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("suffix", [".html", ".htm", ".pdf", ".docx"])
def test_registry_names_a_converter_that_reads_the_suffix(suffix):
    converter = converter_for(Path("file" + suffix.upper()))  # suffixes match case-insensitively
    assert suffix in converter.suffixes
    assert CONVERTERS[suffix].startswith("rag.ingest.")


def test_unsupported_type_is_refused_with_the_supported_list():
    with pytest.raises(ConversionError, match=r"unsupported file type '\.exe'.*\.docx.*\.pdf"):
        converter_for(Path("setup.exe"))
    with pytest.raises(ConversionError, match=r"unsupported file type '\(none\)'"):
        converter_for(Path("Makefile"))


# ---------------------------------------------------------------------------------------------
# Text decoding (the helper the txt/md converter uses)

FRENCH = "Le café de la gare coûte 3 € — «très cher», dit-il. Naïve façade, déjà vu.\nThe résumé was “perfect”.\n"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        (FRENCH, "cp1252"),
        ("Über die Straße gehen Müller und Schäfer. Größe: 5 m².\n", "latin-1"),
        ("plain ascii with one café\n", "latin-1"),
        ("Привет, мир! Это тестовый документ о погоде в Москве. Завтра будет дождь.\n", "cp1251"),
        ("Zażółć gęślą jaźń. Łódź jest dużym miastem w Polsce, a Kraków też.\n", "cp1250"),
        ("これは日本語のテスト文書です。東京の天気は晴れです。\n", "shift_jis"),
        (FRENCH, "utf-8"),
    ],
)
def test_decode_text_reads_legacy_encodings_right(text, encoding):
    assert decode_text(text.encode(encoding), Path("a.txt")) == text


@pytest.mark.parametrize("bom, encoding", [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF32_LE, "utf-32-le")])
def test_decode_text_follows_and_drops_the_byte_order_mark(bom, encoding):
    assert decode_text(bom + FRENCH.encode(encoding), Path("a.txt")) == FRENCH


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"empty file \(0 bytes\)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary file"),
        (os.urandom(4096), "binary file|not text"),
        (b"text\x01\x02\x03\x04\x05\x06 with many controls\x07\x08\x0e\x0f", r"binary file \(\d+ control characters"),
    ],
)
def test_decode_text_rejects_empty_and_binary(data, reason):
    with pytest.raises(ConversionError, match=reason):
        decode_text(data, Path("a.txt"))


# ---------------------------------------------------------------------------------------------
# HTML

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>  Harbour   bridge reopens </title>
<script>var secret = "SCRIPT_TEXT"; document.write("SCRIPT_TEXT");</script>
<style>body { color: red } /* STYLE_TEXT */</style></head>
<body><nav><a href="/">Home</a> | <a href="/news">News</a></nav>
<article><h1>Harbour bridge reopens</h1>
<p>The harbour bridge reopened on Monday after eight months of repairs, the city council said.</p>
<p>Engineers replaced 400 tonnes of steel and repainted the main span, at a cost of 12 million euros.</p>
<script>trackView("SCRIPT_TEXT")</script>
<p>Traffic is expected to return to normal by Friday.</p></article>
<footer>Copyright 2024 Example News. All rights reserved.</footer>
<noscript>NOSCRIPT_TEXT</noscript>
</body></html>
"""


def test_html_main_text_and_title(tmp_path):
    path = tmp_path / "bridge.html"
    path.write_text(PAGE, encoding="utf-8")
    out = convert_file(path)
    assert out.title == "Harbour bridge reopens"
    assert out.text == (
        "Harbour bridge reopens\n\n"
        "The harbour bridge reopened on Monday after eight months of repairs, the city council said.\n\n"
        "Engineers replaced 400 tonnes of steel and repainted the main span, at a cost of 12 million euros.\n\n"
        "Traffic is expected to return to normal by Friday."
    )
    assert out.pages == []


def test_html_full_of_scripts_keeps_only_the_visible_text(tmp_path):
    scripts = "".join(f'<script>var x{i} = "SCRIPT_{i}"; eval("SCRIPT_{i}");</script>' for i in range(500))
    page = f"<html><head>{scripts}<style>p{{}}/*STYLE*/</style></head><body>{scripts}<p>Only this sentence is visible.</p>{scripts}<noscript>NOSCRIPT</noscript></body></html>"
    path = tmp_path / "tracker.htm"
    path.write_text(page, encoding="utf-8")
    out = convert_file(path)
    assert out.text == "Only this sentence is visible."
    assert out.title == ""


def test_html_of_only_scripts_is_rejected(tmp_path):
    scripts = "".join(f"<script>document.write('x{i}')</script>" for i in range(200))
    path = tmp_path / "app.html"
    path.write_text(f"<html><head><title>App</title><style>b{{}}</style></head><body>{scripts}<noscript>Enable JavaScript</noscript></body></html>")
    with pytest.raises(ConversionError, match="no extractable text: the page has no visible text outside scripts"):
        convert_file(path)


def test_html_short_page_falls_back_to_visible_text():
    html = b"<html><body><ul><li>Milk</li><li>Eggs</li></ul><script>x()</script></body></html>"
    assert HtmlConverter().convert(html, Path("list.html")).text == "Milk\n\nEggs"


def test_html_declared_and_undeclared_legacy_encodings():
    declared = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head><body><p>Le café coûte 3 €.</p></body></html>'
    assert HtmlConverter().convert(declared.encode("cp1252"), Path("a.html")).text == "Le café coûte 3 €."
    undeclared = f"<html><body><p>{FRENCH}</p></body></html>"
    assert "coûte 3 € — «très cher»" in HtmlConverter().convert(undeclared.encode("cp1252"), Path("a.html")).text


@pytest.mark.parametrize("data", [b"", b"   \n", b"<!-- nothing -->", b"<html></html>"])
def test_html_empty(data):
    with pytest.raises(ConversionError, match="empty file|no extractable text"):
        HtmlConverter().convert(data, Path("empty.html"))


@pytest.mark.parametrize("data", [b"<div>" * 100_000 + b"deep", b"<html><body>\x00\x01\x02</body></html>" * 10, b"<<<>>>&&&;;;" * 1000])
def test_html_hostile_markup_never_crashes(data):
    try:
        HtmlConverter().convert(data, Path("x.html"))
    except ConversionError:
        pass


# ---------------------------------------------------------------------------------------------
# PDF

PAGE_1 = ["Harbour Report", "The well-", "known bridge reopened on Monday after", "eight months of repairs.", "Costs: 12 million euros, paid (in part) by the café tax."]
PAGE_2 = ["Traffic", "Traffic returns to normal by Friday."]


def test_pdf_text_per_page_with_offsets_and_title(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf([PAGE_1, PAGE_2, ["Appendix: 3 tables."]], title="Harbour bridge report"))
    out = convert_file(path)
    first = "Harbour Report\nThe well-known bridge reopened on Monday after eight months of repairs.\nCosts: 12 million euros, paid (in part) by the café tax."
    second = "Traffic\nTraffic returns to normal by Friday."
    assert out.text == first + "\n\n" + second + "\n\nAppendix: 3 tables."
    assert out.pages == [0, len(first) + 2, len(first) + 2 + len(second) + 2]
    assert out.text[out.pages[1] :].startswith("Traffic\nTraffic returns")
    assert out.text[out.pages[2] :] == "Appendix: 3 tables."
    assert out.title == "Harbour bridge report"


def test_pdf_without_title_metadata_has_empty_title():
    assert PdfConverter().convert(make_pdf([PAGE_2]), Path("a.pdf")).title == ""


def test_pdf_blank_page_keeps_its_offset():
    out = PdfConverter().convert(make_pdf([PAGE_2, None, ["Last page."]]), Path("a.pdf"))
    first = "Traffic\nTraffic returns to normal by Friday."
    assert out.text == first + "\n\n" + "" + "\n\n" + "Last page."
    assert out.pages == [0, len(first) + 2, len(first) + 4]


def test_pdf_of_blank_pages_without_text_layer_is_rejected(tmp_path):
    """Its pages go to OCR (tests/test_ocr.py reads real scans), which finds nothing on them."""
    path = tmp_path / "scan.pdf"
    path.write_bytes(make_pdf([None, None]))
    with pytest.raises(ConversionError, match="^no text found by OCR$"):
        convert_file(path)


def test_pdf_encrypted_with_a_password_is_rejected(tmp_path):
    path = tmp_path / "secret.pdf"
    path.write_bytes(encrypt_pdf(make_pdf([PAGE_2]), user_password="secret"))
    with pytest.raises(ConversionError, match="^encrypted PDF: it needs a password"):
        convert_file(path)


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_pdf_encrypted_with_an_empty_password_is_read(algorithm):
    """AES needs pypdf's [crypto] extra (cryptography): a fresh install without it rejects every
    such PDF, including the common kind that opens without a password."""
    data = encrypt_pdf(make_pdf([PAGE_2], title="Open"), user_password="", algorithm=algorithm)
    out = PdfConverter().convert(data, Path("locked-for-editing.pdf"))
    assert out.text == "Traffic\nTraffic returns to normal by Friday."


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.7\n" + bytes(range(256)) * 20, "^damaged PDF: "),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF", "^damaged PDF: "),
        (b"GIF89a not a pdf at all", "^not a PDF: "),
        (b"", r"^empty file \(0 bytes\)$"),
    ],
)
def test_pdf_corrupt_or_not_a_pdf(data, reason):
    with pytest.raises(ConversionError, match=reason):
        PdfConverter().convert(data, Path("bad.pdf"))


def test_pdf_truncated_never_crashes():
    data = make_pdf([PAGE_1, PAGE_2])
    for cut in range(0, len(data), max(1, len(data) // 40)):
        try:
            PdfConverter().convert(data[:cut], Path("cut.pdf"))
        except ConversionError as err:
            assert str(err)


# ---------------------------------------------------------------------------------------------
# DOCX


def test_docx_paragraphs_tables_and_title(tmp_path):
    path = tmp_path / "minutes.docx"
    path.write_bytes(
        make_docx(
            title=" Council  minutes ",
            paragraphs=("The council met on Tuesday.", "", "It approved the   budget of 3 million euros."),
            table=[["Item", "Cost"], ["Bridge", "12 million"]],
        )
    )
    out = convert_file(path)
    assert out.title == "Council minutes"
    assert out.text == "The council met on Tuesday.\n\nIt approved the budget of 3 million euros.\n\nItem | Cost\n\nBridge | 12 million"
    assert out.pages == []


def test_docx_zip_bomb_is_rejected_before_parsing(tmp_path):
    bomb = zip_bytes({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    path = tmp_path / "invoice.docx"
    path.write_bytes(bomb)
    with pytest.raises(ConversionError, match=r"^zip bomb: compressed \d+x"):
        convert_file(path)


def test_docx_zip_bomb_of_many_members_is_rejected():
    bomb = zip_bytes({f"word/media/{i}.xml": b"" for i in range(3000)}, compression=zipfile.ZIP_STORED)
    with pytest.raises(ConversionError, match=r"^zip bomb: 3000 archive members"):
        DocxConverter().convert(bomb, Path("many.docx"))


def test_docx_too_large_once_uncompressed_is_rejected(monkeypatch):
    import rag.ingest.docx as module

    monkeypatch.setattr(module, "MAX_UNCOMPRESSED_BYTES", 1024 * 1024)
    data = zip_bytes({"word/document.xml": os.urandom(2 * 1024 * 1024)})  # incompressible: no ratio alarm
    with pytest.raises(ConversionError, match=r"^zip bomb: 2,097,152 bytes once uncompressed"):
        DocxConverter().convert(data, Path("big.docx"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"^empty file \(0 bytes\)$"),
        (b"This is a text file someone renamed to .docx", "^not a .docx: the file is not a zip archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, "^not a .docx: this is an old binary Word .doc"),
        (zip_bytes({"notes.txt": b"hello"}), "^not a .docx: the zip archive has no word/document.xml"),
        (zip_bytes({"word/document.xml": b"<not-closed", "[Content_Types].xml": b"<Types/>"}), "^damaged .docx: "),
        (make_docx(title="Empty"), "^no extractable text: the document has no text"),
    ],
)
def test_docx_bad_inputs(data, reason):
    with pytest.raises(ConversionError, match=reason):
        DocxConverter().convert(data, Path("bad.docx"))


def test_docx_truncated_never_crashes():
    data = make_docx(paragraphs=("One paragraph.",))
    for cut in range(0, len(data), max(1, len(data) // 30)):
        with pytest.raises(ConversionError):
            DocxConverter().convert(data[:cut], Path("cut.docx"))
