"""File converters behind one protocol: the suffix of a file picks its converter.

Adding a format is one file in this folder plus one line in CONVERTERS. A converter whose
constructor takes `settings` (the OCR ones) gets the caller's Settings when it passes them.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConversionError, Converter, Extracted, Repair

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["CONVERTERS", "ConversionError", "Converter", "Extracted", "Repair", "converter_for", "supported_suffixes"]

# suffix -> "module:Class", imported only when a file of that type is read.
CONVERTERS: dict[str, str] = {
    ".txt": "rag.ingest.text:TextConverter",
    ".md": "rag.ingest.text:TextConverter",
    ".html": "rag.ingest.html:HtmlConverter",
    ".htm": "rag.ingest.html:HtmlConverter",
    ".pdf": "rag.ingest.pdf:PdfConverter",
    ".docx": "rag.ingest.docx:DocxConverter",
    ".png": "rag.ingest.image:ImageConverter",
    ".jpg": "rag.ingest.image:ImageConverter",
    ".jpeg": "rag.ingest.image:ImageConverter",
    ".tif": "rag.ingest.image:ImageConverter",
    ".tiff": "rag.ingest.image:ImageConverter",
}

_cache: dict[str, Converter] = {}


def supported_suffixes() -> list[str]:
    return sorted(CONVERTERS)


def converter_for(path: Path, settings: "Settings | None" = None) -> Converter:
    """The converter for `path`'s suffix; built with `settings` if it takes them (else one kept
    per type, which reads Settings() from the environment when it needs them).

    Raises:
        ConversionError: the type is not supported; the message lists the supported ones.
    """
    suffix = path.suffix.lower()
    target = CONVERTERS.get(suffix)
    if target is None:
        raise ConversionError(f"unsupported file type {suffix or '(none)'!r}; supported: {', '.join(supported_suffixes())}")
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if settings is not None and "settings" in inspect.signature(cls).parameters:
        return cls(settings)
    if target not in _cache:
        _cache[target] = cls()
    return _cache[target]

