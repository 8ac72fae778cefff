"""PDF -> text per page (pypdf), with the offset where each page starts so a citation names its page.

pypdf (BSD) rather than PyMuPDF (AGPL) reads the text layer. A page without one (a scan) is
rendered by pypdfium2 (PDFium; Apache-2.0 / BSD) at `ocr_dpi` and read by OCR (rag/ingest/ocr.py);
a PDF where neither finds any text is rejected with "no text found by OCR" rather than indexed as
empty pages. A page with a text layer is never OCR'd, even if it also holds a scanned image.
Lines that a page wraps inside a sentence are joined, because the chunker ends a sentence at
every line break.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConversionError, Extracted

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

PAGE_SEPARATOR = "\n\n"
# A line break inside a sentence: the line does not end a sentence or a heading-like line
# (. ! ? : ;) and the next line starts in lower case or with a digit, so it continues it.
_WRAPPED = re.compile(r"(?<=[^\s.!?:;])[ \t]*\n[ \t]*(?=[a-z0-9(])")
# A word hyphenated across lines keeps its hyphen ("well-\nknown" -> "well-known"): dropping it
# would also break true compounds, and a stray hyphen costs less than a wrong word.
_HYPHENATED = re.compile(r"(?<=\w-)[ \t]*\n[ \t]*(?=[a-z])")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")
# Most pixels a page is rendered with for OCR (a 200-dpi letter page is 3.7 M): a page declared
# metres wide is rendered smaller instead of exhausting memory.
MAX_RENDER_PIXELS = 16_000_000


class PdfConverter:
    """Reads .pdf files: the text layer, and OCR for pages without one."""

    suffixes = (".pdf",)

    def __init__(self, settings: "Settings | None" = None) -> None:
        self.settings = settings  # None: Settings() at each scanned file, so RAG_OCR_* env vars apply

    def convert(self, data: bytes, path: Path) -> Extracted:
        """Text of every page, joined with blank lines; `pages` holds each page's start offset,
        `ocr_pages` the pages whose text OCR read.

        Raises:
            ConversionError: empty, not a PDF, damaged, encrypted with a password, or no text
                found in the text layer nor by OCR.
        """
        from pypdf import PdfReader
        from pypdf.errors import DependencyError, FileNotDecryptedError

        if not data.strip():
            raise ConversionError("empty file" + (" (0 bytes)" if not data else " (whitespace only)"))
        if b"%PDF-" not in data[:1024]:
            raise ConversionError("not a PDF: the file does not start with a %PDF- header")
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not _opens_without_password(reader):
                raise ConversionError("encrypted PDF: it needs a password to open; save an unencrypted copy and add that")
            texts = [_page_text(page) for page in reader.pages]
        except ConversionError:
            raise
        except (FileNotDecryptedError, DependencyError) as err:
            raise ConversionError(f"encrypted PDF: cannot decrypt it ({err})") from None
        except Exception as err:  # pypdf raises many types on damaged files (PdfReadError, KeyError, ...): report, never crash
            raise ConversionError(f"damaged PDF: {type(err).__name__}: {err}"[:300]) from None
        if not texts:
            raise ConversionError("damaged PDF: it has no pages")
        scanned = [i for i, text in enumerate(texts) if not text]
        repairs, ocr_pages = [], []
        if scanned:
            from .ocr import no_text_error, read_pages
            from ..config import Settings

            settings = self.settings or Settings()
            renderer = _Renderer(data, settings.ocr_dpi)
            found, repairs = read_pages([(i + 1, renderer.page(i)) for i in scanned], settings)
            for number, text in sorted(found.items()):
                texts[number - 1] = clean_page_text(text)
                if texts[number - 1]:
                    ocr_pages.append(number)
            if not any(texts):
                raise no_text_error(repairs)
        pages, parts, offset = [], [], 0
        for text in texts:
            pages.append(offset)
            parts.append(text)
            offset += len(text) + len(PAGE_SEPARATOR)
        return Extracted(text=PAGE_SEPARATOR.join(parts), title=_title(reader), pages=pages, repairs=repairs, ocr_pages=ocr_pages)


class _Renderer:
    """Renders pages of one PDF to images with PDFium, opening the document on first use."""

    def __init__(self, data: bytes, dpi: int) -> None:
        self.data, self.dpi, self.doc = data, dpi, None

    def page(self, index: int):
        def render():
            import pypdfium2

            if self.doc is None:
                self.doc = pypdfium2.PdfDocument(self.data)
            page = self.doc[index]
            width, height = page.get_size()  # points
            scale = min(self.dpi / 72, (MAX_RENDER_PIXELS / max(width * height, 1.0)) ** 0.5)
            return page.render(scale=scale, grayscale=True).to_pil()

        return render


def _opens_without_password(reader) -> bool:
    """True if the PDF is encrypted only against editing (it opens with an empty user password)."""
    from pypdf import PasswordType

    return reader.decrypt("") != PasswordType.NOT_DECRYPTED


def _page_text(page) -> str:
    """One page's text layer, cleaned by `clean_page_text`."""
    return clean_page_text(page.extract_text() or "")


def clean_page_text(text: str) -> str:
    """A page's text: wrapped lines joined, runs of spaces and blank lines collapsed, trimmed.

    >>> clean_page_text("The bridge was\\nopened in  1932.\\n\\n\\n\\nNext")
    'The bridge was opened in 1932.\\n\\nNext'
    """
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _HYPHENATED.sub("", text)
    text = _WRAPPED.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def _title(reader) -> str:
    """The document's title from its metadata, or "" (damaged metadata is not worth a failure)."""
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception as err:
        log.debug("unreadable PDF metadata: %s", err)
        return ""
    return " ".join(str(title).split()) if title else ""
