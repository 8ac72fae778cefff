"""Plain text and Markdown: the file's bytes decoded as UTF-8, kept as they are so offsets hold."""

from __future__ import annotations

from pathlib import Path

from .base import ConversionError, Extracted, Repair


class TextConverter:
    """UTF-8 text. Invalid bytes are replaced (and reported), never a reason to drop the file;
    a leading byte-order mark is not content and is removed."""

    suffixes = (".txt", ".md")

    def convert(self, data: bytes, path: Path) -> Extracted:
        """The decoded text.

        >>> TextConverter().convert("\\ufeffCafé".encode("utf-8"), Path("a.txt")).text
        'Café'
        >>> TextConverter().convert(b"Caf\\xe9", Path("a.txt")).repairs[0].action
        'decoded with replacement'

        Raises:
            ConversionError: the file holds NUL bytes: it is binary, not text.
        """
        if b"\x00" in data:
            raise ConversionError("binary file (contains NUL bytes)")
        repairs = []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            text = data.decode("utf-8", errors="replace")
            repairs.append(Repair(action="decoded with replacement", reason=f"not valid UTF-8 ({err.reason} at byte {err.start})"))
        if text.startswith("\ufeff"):
            text = text[1:]  # a BOM is not content; offsets are into the text without it
        return Extracted(text=text, repairs=repairs)
