"""Word .docx -> paragraphs and table rows in document order (python-docx), title from its properties.

A .docx is a zip archive, so the archive is checked before anything is decompressed: a small
file that inflates to gigabytes (a zip bomb) is rejected from its directory alone. Python's
zipfile never inflates a member past the size its directory declares, so declared sizes bound
what python-docx can read.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from .base import ConversionError, Extracted

# A real .docx holds a few dozen parts (more with many images) and inflates 5-20x; the largest
# documents we expect are well under these.
MAX_MEMBERS = 2_000
MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
MAX_RATIO = 100  # whole archive, uncompressed / compressed; only checked past RATIO_FLOOR_BYTES
RATIO_FLOOR_BYTES = 10 * 1024 * 1024  # tiny archives may compress very well and are harmless
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the old binary .doc (and other OLE files)


class DocxConverter:
    """Reads Word .docx files."""

    suffixes = (".docx",)

    def convert(self, data: bytes, path: Path) -> Extracted:
        """Body text, paragraphs separated by blank lines; table rows as cells joined by " | ".

        Raises:
            ConversionError: empty, not a .docx, a zip bomb, damaged, or no text.
        """
        check_archive(data)
        import docx
        from docx.table import Table

        try:
            document = docx.Document(io.BytesIO(data))
            blocks = []
            for item in document.iter_inner_content():
                if isinstance(item, Table):
                    blocks.extend(_rows(item))
                else:
                    blocks.append(item.text)
            title = document.core_properties.title or ""
        except Exception as err:  # python-docx and lxml raise many types on damaged parts: report, never crash
            raise ConversionError(f"damaged .docx: {type(err).__name__}: {err}"[:300]) from None
        text = "\n\n".join(" ".join(block.split()) for block in blocks if block.strip())
        if not text:
            raise ConversionError("no extractable text: the document has no text in its body")
        return Extracted(text=text, title=" ".join(title.split()))


def check_archive(data: bytes) -> None:
    """Reject `data` unless it is a zip archive of a plausible size for an Office document.

    Raises:
        ConversionError: empty, an old .doc, not a zip, or a zip bomb (too many members, too
            large once inflated, or compressed far more than documents are).
    """
    if not data:
        raise ConversionError("empty file (0 bytes)")
    if data.startswith(_OLE_MAGIC):
        raise ConversionError("not a .docx: this is an old binary Word .doc (or another OLE file); save it as .docx")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ConversionError(f"not a .docx: the file is not a zip archive ({err})") from None
    if len(members) > MAX_MEMBERS:
        raise ConversionError(f"zip bomb: {len(members)} archive members (a .docx has at most {MAX_MEMBERS})")
    inflated = sum(m.file_size for m in members)
    compressed = sum(m.compress_size for m in members) or 1
    if inflated > MAX_UNCOMPRESSED_BYTES:
        raise ConversionError(f"zip bomb: {inflated:,} bytes once uncompressed (limit {MAX_UNCOMPRESSED_BYTES:,})")
    if inflated > RATIO_FLOOR_BYTES and inflated / compressed > MAX_RATIO:
        raise ConversionError(f"zip bomb: compressed {inflated / compressed:.0f}x (documents compress less than {MAX_RATIO}x)")
    if not any(m.filename == "word/document.xml" for m in members):
        raise ConversionError("not a .docx: the zip archive has no word/document.xml")


def _rows(table) -> list[str]:
    """One line per table row, its distinct cells joined by " | " (merged cells repeat in python-docx)."""
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        rows.append(" | ".join(cells))
    return rows
