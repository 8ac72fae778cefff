"""The file-format seam: a `Converter` per file type turns bytes into extracted text.

Like Haystack's converters, each one handles a single file and reports failure for that file
only (`ConversionError`), never for the batch. The extracted text is what the index stores as
`Document.text`: every chunk, citation offset and the viewer read it, never the source file.
The registry in `rag/ingest/__init__.py` maps suffixes to converters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field


class ConversionError(ValueError):
    """This file cannot be read; `str(err)` is the reason a user can act on."""


class Repair(BaseModel):
    """Something a converter had to do to read a file that was not clean; reported by name, never silent."""

    action: str = Field(description='what was done, e.g. "decoded with replacement"')
    reason: str = Field(description="why, e.g. the first invalid byte")


class Extracted(BaseModel):
    """A converter's output for one file."""

    text: str
    title: str = Field("", description="the document's own title where the format has one, else empty (first line is used)")
    pages: list[int] = Field([], description="character offset in `text` where each page starts (PDF); empty if unpaged")
    ocr_pages: list[int] = Field([], description="1-based numbers of the pages whose text OCR read (every page of an image)")
    repairs: list[Repair] = Field([], description="what had to be done to read the file (reported, the file is still used)")


@runtime_checkable
class Converter(Protocol):
    """Turns one file's bytes into text."""

    suffixes: tuple[str, ...]
    """Lower-case file suffixes it reads, with the dot: (".pdf",)."""

    def convert(self, data: bytes, path: Path) -> Extracted:
        """Extract text from `data` (the bytes of `path`; the path is for messages and titles).

        Raises:
            ConversionError: the file is damaged, encrypted, empty or has no extractable text.
        """
        ...
