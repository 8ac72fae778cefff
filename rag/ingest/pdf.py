"""PDF -> text per page (pypdf), with the offset where each page starts so a citation names its page.

pypdf (BSD) rather than PyMuPDF (AGPL). Only the text layer is read: a scanned PDF, whose pages
are images, has none, and is rejected with that reason rather than indexed as empty pages.
Lines that a page wraps inside a sentence are joined, because the chunker ends a sentence at
every line break.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from .base import ConversionError, Extracted

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


class PdfConverter:
    """Reads .pdf files that have a text layer."""

    suffixes = (".pdf",)

    def convert(self, data: bytes, path: Path) -> Extracted:
        """Text of every page, joined with blank lines; `pages` holds each page's start offset.

        Raises:
            ConversionError: empty, not a PDF, damaged, encrypted with a password, or no text layer.
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
        if not any(texts):
            raise ConversionError("no extractable text: scanned PDFs need OCR, which is not supported")
        pages, parts, offset = [], [], 0
        for text in texts:
            pages.append(offset)
            parts.append(text)
            offset += len(text) + len(PAGE_SEPARATOR)
        return Extracted(text=PAGE_SEPARATOR.join(parts), title=_title(reader), pages=pages)


def _opens_without_password(reader) -> bool:
    """True if the PDF is encrypted only against editing (it opens with an empty user password)."""
    from pypdf import PasswordType

    return reader.decrypt("") != PasswordType.NOT_DECRYPTED


def _page_text(page) -> str:
    """One page's text: wrapped lines joined, runs of spaces and blank lines collapsed, trimmed."""
    text = (page.extract_text() or "").replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
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
