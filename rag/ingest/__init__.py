"""File converters behind one protocol: the suffix of a file picks its converter.

Adding a format is one file in this folder plus one line in CONVERTERS.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import ConversionError, Converter, Extracted, Repair

__all__ = ["CONVERTERS", "ConversionError", "Converter", "Extracted", "Repair", "converter_for", "supported_suffixes"]

# suffix -> "module:Class", imported only when a file of that type is read.
CONVERTERS: dict[str, str] = {
    ".txt": "rag.ingest.text:TextConverter",
    ".md": "rag.ingest.text:TextConverter",
    ".html": "rag.ingest.html:HtmlConverter",
    ".htm": "rag.ingest.html:HtmlConverter",
    ".pdf": "rag.ingest.pdf:PdfConverter",
    ".docx": "rag.ingest.docx:DocxConverter",
}

_cache: dict[str, Converter] = {}


def supported_suffixes() -> list[str]:
    return sorted(CONVERTERS)


def converter_for(path: Path) -> Converter:
    """The converter for `path`'s suffix.

    Raises:
        ConversionError: the type is not supported; the message lists the supported ones.
    """
    suffix = path.suffix.lower()
    target = CONVERTERS.get(suffix)
    if target is None:
        raise ConversionError(f"unsupported file type {suffix or '(none)'!r}; supported: {', '.join(supported_suffixes())}")
    if target not in _cache:
        module, _, cls = target.partition(":")
        _cache[target] = getattr(importlib.import_module(module), cls)()
    return _cache[target]

