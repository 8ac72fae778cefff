"""PNG, JPEG and TIFF -> text by OCR (rag/ingest/ocr.py), one page per image frame (a multi-page TIFF keeps its pages).

Pillow (HPND licence) opens the file; a file it cannot identify, or one over its
decompression-bomb limit (~179 M pixels), is rejected with that reason. An image of nothing (blank, noise) is
rejected with "no text found by OCR" rather than indexed as an empty document.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConversionError, Extracted
from .ocr import no_text_error, read_pages
from .pdf import PAGE_SEPARATOR, clean_page_text

if TYPE_CHECKING:
    from ..config import Settings


class ImageConverter:
    """Reads images of pages by OCR."""

    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

    def __init__(self, settings: "Settings | None" = None) -> None:
        self.settings = settings  # None: Settings() at each file, so RAG_OCR_* env vars apply

    def convert(self, data: bytes, path: Path) -> Extracted:
        """The text of every frame, joined with blank lines; `pages` holds each frame's start
        offset and `ocr_pages` every page (all of it came from OCR).

        Raises:
            ConversionError: empty, not an image, too large, damaged, or no text found by OCR.
        """
        from PIL import Image, UnidentifiedImageError

        from ..config import Settings

        settings = self.settings or Settings()
        if not data:
            raise ConversionError("empty file (0 bytes)")
        try:
            image = Image.open(io.BytesIO(data))
            frames = getattr(image, "n_frames", 1)
        except UnidentifiedImageError:
            raise ConversionError("not a readable image: Pillow cannot identify it (damaged, or not a PNG, JPEG or TIFF)") from None
        except Image.DecompressionBombError as err:
            raise ConversionError(f"image too large to read: {err}"[:300]) from None
        except Exception as err:  # damaged headers raise many types: report, never crash
            raise ConversionError(f"damaged image: {type(err).__name__}: {err}"[:300]) from None

        def frame(i: int):
            def load():
                image.seek(i)
                return image.copy()

            return load

        found, repairs = read_pages([(i + 1, frame(i)) for i in range(frames)], settings)
        texts = [clean_page_text(found.get(i + 1, "")) for i in range(frames)]
        if not any(texts):
            raise no_text_error(repairs)
        pages, offset = [], 0
        for text in texts:
            pages.append(offset)
            offset += len(text) + len(PAGE_SEPARATOR)
        return Extracted(
            text=PAGE_SEPARATOR.join(texts), pages=pages, repairs=repairs,
            ocr_pages=[i + 1 for i, text in enumerate(texts) if text],
        )
